//! Judging a run, once, from the typed results: thresholds, the open-loop
//! knee (`knee`), whether the generator itself was the bottleneck
//! (`health`: validity and cautions), and the exit code that follows.
//! `run`, `merge` and `compare` all judge through here, so a merged
//! summary is judged by the same rules as a single host's.

mod fairness;
mod health;
mod knee;

pub use fairness::fairness;
pub use health::{cautions, half_port_range, validity, Validity};
pub use knee::{knee, knee_line, open_loop_flag, BrokenStage, Knee, KneeStage};

use crate::plan::Thresholds;
use crate::results::{RunSummary, Signal, StageSummary, Stats, Stop};
use serde::Serialize;

/// How the process ends. The code is decided here, never from a message.
/// Written as its name (`"interrupted"`; the signal is in `stop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything held.
    Pass,
    /// A threshold failed, or `compare` found a regression.
    Failed,
    /// A usage or configuration error.
    Usage,
    /// The run measured the generator, not the target.
    Invalid,
    /// Stopped by a signal; what was measured is written.
    Interrupted(Signal),
}

impl Serialize for Exit {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(match self {
            Exit::Pass => "pass",
            Exit::Failed => "failed",
            Exit::Usage => "usage",
            Exit::Invalid => "invalid",
            Exit::Interrupted(_) => "interrupted",
        })
    }
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Pass => 0,
            Exit::Failed => 1,
            Exit::Usage => 2,
            Exit::Invalid => 3,
            Exit::Interrupted(signal) => 128 + signal.number() as u8,
        }
    }
}

/// One threshold check of a stage × scenario (or stage total).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThresholdCheck {
    /// Stage label.
    pub stage: String,
    /// Scenario name, or `all`.
    pub scenario: String,
    /// No limit was exceeded.
    pub pass: bool,
    /// The limits exceeded, readable.
    pub failures: Vec<String>,
}

/// Everything judged about a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// Threshold checks; empty when none are set.
    pub thresholds: Vec<ThresholdCheck>,
    /// Every threshold check passed.
    pub pass: bool,
    /// Open loop: the knee.
    pub knee: Option<Knee>,
    /// Stages in which no request succeeded, readable; each fails the run
    /// unless `thresholds.error_rate` accepts every request failing.
    pub no_success: Vec<String>,
    /// Generator validity.
    pub generator: Validity,
    /// Comparisons: services whose delta is not an overhead (their error
    /// rate stands out, or they were offered less load), readable. They
    /// warn; they do not fail the run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fairness: Vec<String>,
    /// How the process ends.
    pub exit: Exit,
}

/// Judges a run.
pub fn judge(run: &RunSummary) -> Verdict {
    let thresholds = thresholds(run);
    let pass = thresholds.iter().all(|c| c.pass);
    let no_success = no_success(run);
    let generator = validity(run);
    let exit = match &run.stop {
        Some(Stop::Interrupted { signal, .. }) => Exit::Interrupted(*signal),
        Some(Stop::Failed { .. }) => Exit::Invalid,
        None if !generator.valid => Exit::Invalid,
        None if !pass || !no_success.is_empty() => Exit::Failed,
        None => Exit::Pass,
    };
    Verdict {
        thresholds,
        pass,
        knee: knee(run),
        no_success,
        generator,
        fairness: fairness(run),
        exit,
    }
}

/// Stages in which no request succeeded: a run that measured nothing but
/// errors (every request a 404, say) has not passed, thresholds or not,
/// unless `thresholds.error_rate` is 1 (every request may fail).
pub fn no_success(run: &RunSummary) -> Vec<String> {
    if run
        .plan
        .thresholds
        .error_rate
        .is_some_and(|limit| limit >= 1.0)
    {
        return Vec::new();
    }
    run.stages
        .iter()
        // A stage cut short by a stop may not have reached its window.
        .filter(|s| s.total.metrics.ok == 0 && !(s.stopped_early && s.total.metrics.requests == 0))
        .map(|s| match s.total.metrics.requests {
            0 => format!(
                "no request succeeded in stage {}: none finished in its measured window",
                s.label
            ),
            n => format!("no request succeeded in stage {}: all {n} failed", s.label),
        })
        .collect()
}

/// What thresholds are checked against.
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

impl Figures {
    /// The figures of one row.
    pub fn of(stats: &Stats) -> Figures {
        let m = &stats.metrics;
        Figures {
            requests: m.requests,
            error_rate: stats.rates.error_rate,
            rps: stats.rates.rps,
            ttft_p95_ms: m.ttft.percentile_ms(95.0),
            p95_ms: m.latency.percentile_ms(95.0),
            p99_ms: m.latency.percentile_ms(99.0),
        }
    }
}

/// The limits `f` exceeds, readable; `min_rps` applies to a stage total
/// only, since a scenario's rate is its weight's share.
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

/// Every threshold check of a run; empty when the plan sets none.
pub fn thresholds(run: &RunSummary) -> Vec<ThresholdCheck> {
    let t = &run.plan.thresholds;
    if !t.any() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for stage in &run.stages {
        if stage.scenarios.len() > stage.services.len().max(1) {
            for (info, stats) in run.plan.scenarios.iter().zip(&stage.scenarios) {
                if stats.metrics.requests == 0 && info.weight == 0.0 {
                    continue;
                }
                out.push(check(stage, stats, stats.label(), t, false));
            }
        }
        // With services each is held to the limits on its own: the stage
        // total would mix gateways.
        for service in &stage.services {
            out.push(check(
                stage,
                service,
                format!("all@{}", service.name),
                t,
                true,
            ));
        }
        if stage.services.is_empty() {
            out.push(check(stage, &stage.total, stage.total.label(), t, true));
        }
    }
    out
}

fn check(
    stage: &StageSummary,
    stats: &Stats,
    name: String,
    t: &Thresholds,
    total: bool,
) -> ThresholdCheck {
    let failures = check_thresholds(t, &Figures::of(stats), total);
    ThresholdCheck {
        stage: stage.label.clone(),
        scenario: name,
        pass: failures.is_empty(),
        failures,
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::results::{ErrorClass, StageMetrics};
    use crate::stage::Load;

    /// The fixed run's open stage as an `@rate` stage with `started`
    /// conversations in its 10 s, `dropped` arrivals and `errors` 5xx.
    pub(crate) fn open_stage(
        base: &StageSummary,
        rate: f64,
        started: u64,
        dropped: u64,
        errors: u64,
    ) -> StageSummary {
        let mut m = StageMetrics::new();
        m.conversations_started = started;
        m.arrivals_sent = started;
        m.requests = started;
        m.arrivals = started + dropped;
        m.dropped_arrivals = dropped;
        for _ in 0..errors {
            m.count_error(ErrorClass::Http5xx);
        }
        for _ in 0..started {
            m.latency_corrected.record_us(2_000);
        }
        let mut stage = base.clone();
        stage.label = format!("@{rate}:10s");
        stage.load = Load::Open {
            rate,
            poisson: false,
        };
        stage.measured_s = 10.0;
        stage.total.metrics = m;
        stage.scenarios.truncate(1);
        stage.scenarios[0].metrics = stage.total.metrics.clone();
        stage.derive();
        stage
    }

    pub(crate) fn run_of(stages: Vec<StageSummary>) -> RunSummary {
        let (mut run, _) = crate::report::fixture::fixed();
        run.plan.thresholds = Thresholds {
            p99_ms: Some(5.0),
            ..Thresholds::default()
        };
        run.stages = stages;
        run
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::ErrorClass;

    #[test]
    fn a_stage_with_no_success_fails_the_run() {
        let (mut run, _) = crate::report::fixture::fixed();
        run.plan.thresholds = Thresholds::default();
        assert_eq!(judge(&run).exit, Exit::Pass);
        let m = &mut run.stages[1].total.metrics;
        m.errors[ErrorClass::Http4xx as usize] += m.ok;
        m.ok = 0;
        let verdict = judge(&run);
        assert_eq!(verdict.exit, Exit::Failed);
        assert_eq!(
            verdict.no_success,
            ["no request succeeded in stage @100:10s: all 206 failed"]
        );
        // A profile that accepts every request failing says otherwise.
        run.plan.thresholds.error_rate = Some(1.0);
        assert_eq!(judge(&run).exit, Exit::Pass);
        // A stage a stop cut before anything finished is not a failure.
        run.plan.thresholds.error_rate = None;
        let m = &mut run.stages[1].total.metrics;
        m.errors[ErrorClass::Http4xx as usize] = 0;
        m.requests = 0;
        run.stages[1].stopped_early = true;
        assert!(judge(&run).no_success.is_empty());
    }

    #[test]
    fn the_exit_code_follows_the_verdict() {
        let (mut run, verdict) = crate::report::fixture::fixed();
        assert_eq!(verdict.exit, Exit::Failed);
        assert_eq!(verdict.exit.code(), 1);
        for (signal, code) in [
            (Signal::Int, 130),
            (Signal::Term, 143),
            (Signal::Hup, 129),
            (Signal::Quit, 131),
        ] {
            run.stop = Some(Stop::Interrupted {
                signal,
                abandoned: 0,
            });
            assert_eq!(judge(&run).exit.code(), code);
        }
        run.stop = Some(Stop::Failed {
            reason: "shard 0 failed".into(),
        });
        assert_eq!(judge(&run).exit, Exit::Invalid);
        run.stop = None;
        run.plan.thresholds = Thresholds::default();
        assert_eq!(judge(&run).exit, Exit::Pass);
        run.stages[0]
            .total
            .metrics
            .count_error(ErrorClass::GenFdExhaustion);
        assert_eq!(judge(&run).exit, Exit::Invalid);
    }
}
