//! The live Prometheus exposition (`run --metrics-listen`): what the run
//! has done so far, from the coordinator's merged seconds and the shards'
//! per-scenario counters sent with them, never from the shards' hot path.
//!
//! - Counters over the whole run (warm-up included, so they only grow):
//!   requests, errors and errors by class.
//! - The running stage: its target and last second's achieved arrival
//!   rate (open loop), requests in flight, and summaries of latency, TTFT,
//!   ITL and scheduler lag so far.
//! - Per stage, scenario and service (`service` only in a comparison): the
//!   measured requests, successes and errors by class so far; when a stage
//!   ends they are replaced by its summary's totals, so the last scrape
//!   agrees with the summary.

use super::prometheus::label as escape;
use crate::results::{ErrorClass, Hist, LaneCounts, SeriesPoint, StageSummary, Window};
use std::fmt::Write as _;

/// The running stage: index, label, open-loop target, and its latency,
/// TTFT, ITL and scheduler lag so far.
#[derive(Debug, Default, Clone)]
struct Running {
    index: usize,
    label: String,
    target: Option<f64>,
    achieved: f64,
    latency: Hist,
    ttft: Hist,
    itl: Hist,
    sched_lag: Hist,
}

/// What the run has done so far.
#[derive(Debug, Default, Clone)]
pub struct Live {
    /// Each scenario lane's label values: scenario, and service.
    lanes: Vec<(String, Option<String>)>,
    requests: u64,
    errors: [u64; ErrorClass::COUNT],
    in_flight: u64,
    stage: Option<Running>,
    /// Per stage (index, label): each lane's counters, the running stage's
    /// so far and each finished stage's final ones.
    stages: Vec<(usize, String, Vec<LaneCounts>)>,
}

impl Live {
    /// A live view of a run whose scenario lanes are these (scenario name,
    /// service name).
    pub fn new(lanes: Vec<(String, Option<String>)>) -> Live {
        Live {
            lanes,
            ..Live::default()
        }
    }

    /// A stage started.
    pub fn stage_started(&mut self, index: usize, label: &str, target_rate: Option<f64>) {
        self.stage = Some(Running {
            index,
            label: label.to_string(),
            target: target_rate,
            ..Running::default()
        });
        self.stages.push((index, label.to_string(), Vec::new()));
    }

    /// A second of the running stage ended on every shard; `lanes` are
    /// each scenario's counters in the stage so far.
    pub fn second(&mut self, point: &SeriesPoint, window: &Window, lanes: &[LaneCounts]) {
        self.requests += window.requests;
        for (mine, theirs) in self.errors.iter_mut().zip(&window.error_classes) {
            *mine += theirs;
        }
        self.in_flight = point.in_flight;
        if let Some(running) = &mut self.stage {
            running.achieved = window.arrivals_sent as f64;
            running.latency.merge(&window.latency);
            running.ttft.merge(&window.ttft);
            running.itl.merge(&window.itl);
            running.sched_lag.merge(&window.sched_lag);
        }
        if let Some(last) = self.stages.last_mut() {
            last.2 = lanes.to_vec();
        }
    }

    /// A stage finished and was merged: its lanes take their final,
    /// measured totals.
    pub fn stage_finished(&mut self, stage: &StageSummary) {
        let lanes = stage
            .scenarios
            .iter()
            .map(|s| LaneCounts::of(&s.metrics))
            .collect();
        match self.stages.iter_mut().find(|s| s.0 == stage.index) {
            Some(entry) => entry.2 = lanes,
            None => self.stages.push((stage.index, stage.label.clone(), lanes)),
        }
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
        let errors: u64 = self.errors.iter().sum();
        let _ = writeln!(out, "loadtest_live_errors_total {errors}");
        family(
            &mut out,
            "loadtest_live_errors_by_class_total",
            "counter",
            "Failed requests so far by error class, warm-up included.",
        );
        by_class(
            &mut out,
            "loadtest_live_errors_by_class_total{",
            &self.errors,
        );
        family(
            &mut out,
            "loadtest_live_in_flight",
            "gauge",
            "Requests in flight at the end of the last second.",
        );
        let _ = writeln!(out, "loadtest_live_in_flight {}", self.in_flight);
        self.running_stage(&mut out);
        self.per_scenario(&mut out);
        out
    }

    /// The running stage: which, its rates, its percentiles so far.
    fn running_stage(&self, out: &mut String) {
        let Some(running) = &self.stage else {
            return;
        };
        let labels = format!(
            "stage=\"{}\",stage_index=\"{}\"",
            escape(&running.label),
            running.index
        );
        family(
            out,
            "loadtest_live_stage",
            "gauge",
            "The stage running (1) or last run.",
        );
        let _ = writeln!(out, "loadtest_live_stage{{{labels}}} 1");
        if let Some(rate) = running.target {
            family(
                out,
                "loadtest_live_target_arrival_rate",
                "gauge",
                "Open loop: arrivals per second asked for.",
            );
            let _ = writeln!(out, "loadtest_live_target_arrival_rate{{{labels}}} {rate}");
            family(
                out,
                "loadtest_live_achieved_arrival_rate",
                "gauge",
                "Open loop: arrivals sent in the last second.",
            );
            let _ = writeln!(
                out,
                "loadtest_live_achieved_arrival_rate{{{labels}}} {}",
                running.achieved
            );
        }
        for (name, help, hist) in [
            (
                "loadtest_live_latency_seconds",
                "Latency of successful requests in the stage so far.",
                &running.latency,
            ),
            (
                "loadtest_live_ttft_seconds",
                "Time to first token in the stage so far.",
                &running.ttft,
            ),
            (
                "loadtest_live_itl_seconds",
                "Gaps between content events of successful streamed requests in the stage so far.",
                &running.itl,
            ),
            (
                "loadtest_live_scheduler_lag_seconds",
                "Open loop: actual minus intended start of arrivals in the stage so far.",
                &running.sched_lag,
            ),
        ] {
            summary(out, name, help, &labels, hist);
        }
    }

    /// Each stage's requests, successes and errors per scenario (and
    /// service).
    fn per_scenario(&self, out: &mut String) {
        if self.stages.iter().all(|s| s.2.is_empty()) {
            return;
        }
        let families: [(&str, &str, Counter); 2] = [
            (
                "loadtest_stage_requests",
                "Requests in a stage's measured window so far (a finished stage: as its summary).",
                |l| l.requests,
            ),
            ("loadtest_stage_ok", "Of those, successful.", |l| l.ok),
        ];
        for (name, help, get) in families {
            family(out, name, "gauge", help);
            for (labels, lane) in self.lane_rows() {
                let _ = writeln!(out, "{name}{{{labels}}} {}", get(lane));
            }
        }
        family(
            out,
            "loadtest_stage_errors",
            "gauge",
            "Of those, failed, by class.",
        );
        for (labels, lane) in self.lane_rows() {
            by_class(
                out,
                &format!("loadtest_stage_errors{{{labels},"),
                &lane.errors,
            );
        }
    }

    /// Every (stage, lane) with its label set.
    fn lane_rows(&self) -> Vec<(String, &LaneCounts)> {
        let mut rows = Vec::new();
        for (index, label, lanes) in &self.stages {
            for (lane, counts) in lanes.iter().enumerate() {
                let (scenario, service) = self
                    .lanes
                    .get(lane)
                    .map_or(("?", None), |(s, v)| (s.as_str(), v.as_deref()));
                let mut labels = format!(
                    "stage=\"{}\",stage_index=\"{index}\",scenario=\"{}\"",
                    escape(label),
                    escape(scenario)
                );
                if let Some(service) = service {
                    let _ = write!(labels, ",service=\"{}\"", escape(service));
                }
                rows.push((labels, counts));
            }
        }
        rows
    }
}

/// One sample per error class that occurred: `start` is the sample's name
/// and labels up to the class label (`name{` or `name{a="b",`).
fn by_class(out: &mut String, start: &str, errors: &[u64; ErrorClass::COUNT]) {
    for class in ErrorClass::ALL {
        let n = errors[class as usize];
        if n > 0 {
            let _ = writeln!(out, "{start}class=\"{}\"}} {n}", class.name());
        }
    }
}

/// Reads one counter of a scenario's counts.
type Counter = fn(&LaneCounts) -> u64;

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
    use crate::results::SecondWindow;

    fn second(window: &Window) -> SeriesPoint {
        SeriesPoint {
            second: 1,
            unix_s: 0,
            warmup: false,
            in_flight: 2,
            window: SecondWindow::pack(window),
        }
    }

    #[test]
    fn counters_grow_and_finished_stages_carry_their_totals() {
        let (run, _) = super::super::fixture::fixed();
        let names = run.stages[0]
            .scenarios
            .iter()
            .map(|s| (s.name.clone(), Some("gw".to_string())))
            .collect();
        let mut live = Live::new(names);
        live.stage_started(0, "4:10s", Some(50.0));
        let mut window = Window {
            requests: 3,
            arrivals_sent: 49,
            ..Window::default()
        };
        window.error_classes[ErrorClass::Timeout as usize] = 1;
        window.latency.record_us(2_000);
        window.itl.record_us(5_000);
        window.sched_lag.record_us(300);
        let lanes = vec![
            LaneCounts {
                requests: 2,
                ok: 1,
                ..LaneCounts::default()
            };
            run.stages[0].scenarios.len()
        ];
        live.second(&second(&window), &window, &lanes);
        let first = live.exposition();
        for expected in [
            "loadtest_live_requests_total 3\n",
            "loadtest_live_errors_by_class_total{class=\"timeout\"} 1\n",
            "loadtest_live_latency_seconds{stage=\"4:10s\",stage_index=\"0\",quantile=\"0.5\"} 0.002",
            "loadtest_live_itl_seconds{stage=\"4:10s\",stage_index=\"0\",quantile=\"0.5\"} 0.005",
            "loadtest_live_scheduler_lag_seconds{stage=\"4:10s\",stage_index=\"0\",quantile=\"0.5\"} 0.0003",
            "loadtest_live_achieved_arrival_rate{stage=\"4:10s\",stage_index=\"0\"} 49\n",
            ",service=\"gw\"} 2\n",
        ] {
            assert!(first.contains(expected), "{expected}\n{first}");
        }
        live.second(&second(&window), &window, &lanes);
        live.stage_finished(&run.stages[0]);
        let after = live.exposition();
        assert!(after.contains("loadtest_live_requests_total 6\n"));
        let lane = &run.stages[0].scenarios[0];
        let final_line = format!(
            "loadtest_stage_requests{{stage=\"4:10s\",stage_index=\"0\",scenario=\"{}\",service=\"gw\"}} {}\n",
            escape(&lane.name),
            lane.metrics.requests
        );
        assert!(after.contains(&final_line), "{final_line}\n{after}");
        // Every sample line belongs to a declared family.
        let declared: Vec<&str> = after
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        for line in after.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let base = name.trim_end_matches("_sum").trim_end_matches("_count");
            assert!(
                declared.contains(&name) || declared.contains(&base),
                "{line}"
            );
        }
    }
}
