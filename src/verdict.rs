//! Judging a run, once, from the typed results: thresholds, the open-loop
//! knee, whether the generator itself was the bottleneck (validity and
//! cautions), and the exit code that follows. `run`, `merge` and
//! `compare` all judge through here, so a merged summary is judged by
//! the same rules as a single host's.

use crate::limits;
use crate::plan::Thresholds;
use crate::results::{RunSummary, Signal, StageMetrics, StageSummary, Stats, Stop};
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

/// The knee of an open-loop sweep: the highest-rate stage that held its
/// target, and the first stage, in run order, that did not, with why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Knee {
    /// The highest stage that held.
    pub highest_ok: Option<KneeStage>,
    /// The first stage that broke.
    pub first_broken: Option<BrokenStage>,
}

/// A stage that held its rate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KneeStage {
    /// Stage label.
    pub stage: String,
    /// Its target rate (over all hosts).
    pub rate: f64,
}

/// A stage that broke, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BrokenStage {
    /// Stage label.
    pub stage: String,
    /// Why it broke.
    pub reason: String,
}

/// Whether the generator, not the target, was measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Validity {
    /// No reason to doubt the run.
    pub valid: bool,
    /// Why the run is invalid.
    pub invalid_reasons: Vec<String>,
    /// What leaves a valid run usable with care.
    pub cautions: Vec<String>,
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
        if stage.scenarios.len() > 1 {
            for (info, stats) in run.plan.scenarios.iter().zip(&stage.scenarios) {
                if stats.metrics.requests == 0 && info.weight == 0.0 {
                    continue;
                }
                out.push(check(stage, stats, t, false));
            }
        }
        out.push(check(stage, &stage.total, t, true));
    }
    out
}

fn check(stage: &StageSummary, stats: &Stats, t: &Thresholds, total: bool) -> ThresholdCheck {
    let failures = check_thresholds(t, &Figures::of(stats), total);
    ThresholdCheck {
        stage: stage.label.clone(),
        scenario: stats.name.clone(),
        pass: failures.is_empty(),
        failures,
    }
}

/// Why an open-loop stage did not deliver its load, if it did not:
/// dropped or missed arrivals, or an achieved rate below 99 % of the
/// target.
pub fn open_loop_flag(stage: &StageSummary) -> Option<String> {
    let open = stage.open_loop?;
    let m = &stage.total.metrics;
    let missed = missed_share(m).map_or(0, |_| m.missed_arrivals);
    load_flag(
        open.target_rate,
        open.achieved_rate,
        m.dropped_arrivals,
        missed,
    )
}

/// Missed arrivals past `limits::MISSED_ARRIVALS_INVALID` of the stage's,
/// as a share; `None` below it (a few at the end are routine).
fn missed_share(m: &StageMetrics) -> Option<f64> {
    let share = m.missed_arrivals as f64 / m.arrivals.max(1) as f64;
    (share > limits::MISSED_ARRIVALS_INVALID).then_some(share)
}

fn load_flag(target: f64, achieved: f64, dropped: u64, missed: u64) -> Option<String> {
    let mut reasons = Vec::new();
    if dropped > 0 {
        reasons.push(format!(
            "{dropped} arrivals dropped at max_inflight (the target could not be offered)"
        ));
    }
    if missed > 0 {
        reasons.push(format!(
            "{missed} arrivals missed (due before the stage ended, never sent: the generator fell behind)"
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

/// The knee over a run's open-loop stages (`None` without any): the
/// highest-rate stage that held its target (achieved ≥ 99 %, nothing
/// dropped, error rate within `thresholds.error_rate` or 1 %, corrected
/// p99 within `thresholds.p99_ms` when set), and the first that did not.
pub fn knee(run: &RunSummary) -> Option<Knee> {
    let t = &run.plan.thresholds;
    let mut knee: Option<Knee> = None;
    for stage in run.stages.iter().filter(|s| s.is_open()) {
        let knee = knee.get_or_insert(Knee {
            highest_ok: None,
            first_broken: None,
        });
        let target = stage.target_rate().unwrap_or(0.0);
        let mut reasons: Vec<String> = open_loop_flag(stage).into_iter().collect();
        let max_error = t.error_rate.unwrap_or(0.01);
        let error_rate = stage.total.rates.error_rate;
        if error_rate > max_error {
            reasons.push(format!("error rate {error_rate:.4} > {max_error}"));
        }
        if let Some(lag) = lag_invalid(stage) {
            reasons.push(lag);
        }
        let p99 = stage.total.metrics.latency_corrected.percentile_ms(99.0);
        if let (Some(limit), Some(p99)) = (t.p99_ms, p99) {
            if p99 > limit {
                reasons.push(format!("corrected p99 {p99:.2} ms > {limit} ms"));
            }
        }
        if reasons.is_empty() {
            if knee.highest_ok.as_ref().is_none_or(|k| target > k.rate) {
                knee.highest_ok = Some(KneeStage {
                    stage: stage.label.clone(),
                    rate: target,
                });
            }
        } else if knee.first_broken.is_none() {
            knee.first_broken = Some(BrokenStage {
                stage: stage.label.clone(),
                reason: reasons.join("; "),
            });
        }
    }
    knee
}

/// The knee as one line for the console.
pub fn knee_line(knee: &Knee) -> String {
    let held = match &knee.highest_ok {
        Some(k) => format!("highest stage that held its rate: {}", k.stage),
        None => "no open-loop stage held its rate".to_string(),
    };
    match &knee.first_broken {
        Some(b) => format!("knee: {held}; first to break: {} ({})", b.stage, b.reason),
        None => format!("knee: {held}; no stage broke (raise the rate to find the knee)"),
    }
}

/// Whether the run measured the generator rather than the target:
/// generator-side errors, dropped JSONL records and open-loop lag past
/// `limits::SCHED_LAG_INVALID` make it invalid; see `cautions` for what
/// only asks for care.
pub fn validity(run: &RunSummary) -> Validity {
    let mut invalid = Vec::new();
    let all = run.all_stages();
    for (class, n) in all.error_counts() {
        if class.is_generator_side() {
            invalid.push(format!("{n} {} errors on the generator", class.name()));
        }
    }
    let dropped: u64 = run.hosts.iter().map(|h| h.sink_dropped).sum();
    if dropped > 0 {
        invalid.push(format!(
            "{dropped} per-turn records dropped because the JSONL writer fell behind"
        ));
    }
    for stage in &run.stages {
        if let Some(lag) = lag_invalid(stage) {
            invalid.push(format!("stage {}: {lag}", stage.label));
        }
        invalid.extend(starvation(stage).0);
        let m = &stage.total.metrics;
        if missed_share(m).is_some() {
            invalid.push(format!(
                "stage {}: {} of {} arrivals missed (the generator could not send them before the stage ended)",
                stage.label, m.missed_arrivals, m.arrivals
            ));
        }
    }
    if let Some(Stop::Failed { reason }) = &run.stop {
        invalid.push(reason.clone());
    }
    let cautions = if invalid.is_empty() {
        cautions(run)
    } else {
        Vec::new()
    };
    Validity {
        valid: invalid.is_empty(),
        invalid_reasons: invalid,
        cautions,
    }
}

/// The scheduler lag that makes an open-loop stage invalid, as a reason.
fn lag_invalid(stage: &StageSummary) -> Option<String> {
    let limit_ms = limits::SCHED_LAG_INVALID.as_secs_f64() * 1000.0;
    let p99 = stage.total.metrics.sched_lag.percentile_ms(99.0)?;
    (p99 > limit_ms).then(|| {
        format!(
            "scheduler lag p99 {p99:.1} ms > {limit_ms:.0} ms (the generator could not keep pace)"
        )
    })
}

/// What leaves a valid run's numbers usable with care:
/// - open-loop stages whose scheduler lag p99 passed
///   `limits::SCHED_LAG_CAUTION` without reaching
///   `limits::SCHED_LAG_INVALID`;
/// - a shard busier than `limits::SHARD_BUSY_CAUTION`;
/// - a host holding more connections per target address than half its
///   local port range. Linux looks for a free source port in one half of
///   the range (one parity) before the other, so once that half is taken
///   by connections to one address every connect scans it: measured on
///   Linux 6.18, connects to one address went from ~20 µs to ~0.8 ms each
///   between 14,000 and 16,000 open (range 32768–60999), and stayed at
///   ~20 µs to 18,000 with the range widened (`benches/README.md`). That
///   time lands in `connect_ms` and the corrected latency as if the
///   target were slow to accept.
pub fn cautions(run: &RunSummary) -> Vec<String> {
    let caution_ms = limits::SCHED_LAG_CAUTION.as_secs_f64() * 1000.0;
    let invalid_ms = limits::SCHED_LAG_INVALID.as_secs_f64() * 1000.0;
    let mut out = Vec::new();
    for stage in &run.stages {
        let Some(p99) = stage.total.metrics.sched_lag.percentile_ms(99.0) else {
            continue;
        };
        if p99 > caution_ms && p99 <= invalid_ms {
            out.push(format!(
                "stage {}: scheduler lag p99 {p99:.1} ms > {caution_ms:.0} ms (arrivals went out late in bursts; the corrected percentiles include that lateness, the uncorrected ones do not)",
                stage.label
            ));
        }
    }
    let busy_limit = limits::SHARD_BUSY_CAUTION * 100.0;
    for stage in &run.stages {
        let busiest = stage
            .shard_busy_pct
            .iter()
            .copied()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((shard, busy)) = busiest.filter(|&(_, busy)| busy > busy_limit) {
            out.push(format!(
                "stage {}: generator shard {shard} was {busy:.0}% busy (over {busy_limit:.0}%), so the generator may have been the bottleneck: its own queueing is in the latencies and it may have capped the rate (give it more CPUs with --cpus, or more hosts and `loadtest merge`)",
                stage.label
            ));
        }
    }
    for stage in &run.stages {
        out.extend(starvation(stage).1);
    }
    out.extend(port_range_cautions(run));
    out
}

/// What other processes (or the hypervisor) took from a stage's
/// generator: (reasons the run is invalid, cautions). A shard runnable but
/// waiting for its CPU stamps every answer late by that wait, in closed
/// loop as in open loop.
fn starvation(stage: &StageSummary) -> (Vec<String>, Vec<String>) {
    let (mut invalid, mut cautions) = (Vec::new(), Vec::new());
    let waited = stage
        .shard_wait_per_run_ms
        .iter()
        .copied()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((shard, wait_ms)) = waited {
        let share = stage.shard_wait_pct.get(shard).copied().unwrap_or(0.0);
        let line = |limit: std::time::Duration| {
            format!(
                "stage {}: generator shard {shard} waited {wait_ms:.2} ms for its CPU each time it woke (over {} ms; {share:.0}% of the stage in all): other processes had the CPU, and what it read was stamped late by that",
                stage.label,
                limit.as_secs_f64() * 1000.0
            )
        };
        if wait_ms > limits::SHARD_WAIT_PER_RUN_INVALID.as_secs_f64() * 1000.0 {
            invalid.push(line(limits::SHARD_WAIT_PER_RUN_INVALID));
        } else if wait_ms > limits::SHARD_WAIT_PER_RUN_CAUTION.as_secs_f64() * 1000.0 {
            cautions.push(line(limits::SHARD_WAIT_PER_RUN_CAUTION));
        }
    }
    if let Some(steal) = stage
        .steal_pct
        .filter(|&s| s > limits::STEAL_CAUTION * 100.0)
    {
        cautions.push(format!(
            "stage {}: the hypervisor stole {steal:.1}% of the generator CPUs' time (over {:.0}%)",
            stage.label,
            limits::STEAL_CAUTION * 100.0
        ));
    }
    (invalid, cautions)
}

fn port_range_cautions(run: &RunSummary) -> Vec<String> {
    let addresses = run.plan.target_addresses.max(1) as u64;
    let mut out = Vec::new();
    for (host, facts) in run.hosts.iter().enumerate() {
        let Some((low, high)) = facts.local_port_range else {
            continue;
        };
        let half = half_port_range((low, high));
        for stage in &run.stages {
            let open = stage.connections_open.get(host).copied().unwrap_or(0);
            if open > half * addresses {
                out.push(format!(
                    "stage {}: {open} connections open to {addresses} target address(es), more than half the local port range {low}-{high} each; past that point each new connect scans the taken ports for a free one, so connect_ms (and the corrected latency) may include generator time (widen net.ipv4.ip_local_port_range, see tuning/README.md)",
                    stage.label
                ));
            }
        }
    }
    out
}

/// Half the ports of a local port range `(low, high)`: past this many
/// connections to one address, Linux connects get slow (see `cautions`).
pub fn half_port_range((low, high): (u32, u32)) -> u64 {
    u64::from(high.saturating_sub(low) + 1) / 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{ErrorClass, StageMetrics, StageSummary};
    use crate::stage::Load;

    /// The fixed run's open stage as an `@rate` stage with `started`
    /// conversations in its 10 s, `dropped` arrivals and `errors` 5xx.
    fn open_stage(
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

    fn run_of(stages: Vec<StageSummary>) -> RunSummary {
        let (mut run, _) = crate::report::fixture::fixed();
        run.plan.thresholds = Thresholds {
            p99_ms: Some(5.0),
            ..Thresholds::default()
        };
        run.stages = stages;
        run
    }

    #[test]
    fn knee_is_the_highest_stage_that_held() {
        let (fixed, _) = crate::report::fixture::fixed();
        let base = &fixed.stages[1];
        // 1k/s held, 2k/s held (99.5 %), 4k/s fell short, 8k/s dropped.
        let sweep = run_of(vec![
            open_stage(base, 1000.0, 10_000, 0, 0),
            open_stage(base, 2000.0, 19_900, 0, 0),
            open_stage(base, 4000.0, 30_000, 0, 0),
            open_stage(base, 8000.0, 40_000, 5_000, 0),
        ]);
        let knee = knee(&sweep).unwrap();
        assert_eq!(knee.highest_ok.as_ref().unwrap().stage, "@2000:10s");
        assert_eq!(knee.highest_ok.as_ref().unwrap().rate, 2000.0);
        let broken = knee.first_broken.clone().unwrap();
        assert_eq!(broken.stage, "@4000:10s");
        assert!(
            broken.reason.contains("75.0% of the 4000.0/s target"),
            "{}",
            broken.reason
        );
        assert!(knee_line(&knee).contains("first to break: @4000:10s"));
        // Errors above 1 % (no error_rate threshold set) break a stage too.
        let errors = run_of(vec![open_stage(base, 1000.0, 10_000, 0, 200)]);
        assert!(super::knee(&errors)
            .unwrap()
            .first_broken
            .unwrap()
            .reason
            .contains("error rate"));
        // Closed-loop runs have no knee.
        assert!(super::knee(&run_of(vec![fixed.stages[0].clone()])).is_none());
    }

    #[test]
    fn the_knee_never_names_a_stage_that_lagged_or_missed_arrivals() {
        let (fixed, _) = crate::report::fixture::fixed();
        let base = &fixed.stages[1];
        // 2k/s reached its rate by count but its arrivals went out 2 s
        // late: the generator, not the target, set the pace.
        let mut lagging = open_stage(base, 2000.0, 20_000, 0, 0);
        for _ in 0..20_000 {
            lagging.total.metrics.sched_lag.record_us(2_000_000);
        }
        let sweep = run_of(vec![open_stage(base, 1000.0, 10_000, 0, 0), lagging]);
        let knee = knee(&sweep).unwrap();
        assert_eq!(knee.highest_ok.unwrap().stage, "@1000:10s");
        let broken = knee.first_broken.unwrap();
        assert_eq!(broken.stage, "@2000:10s");
        assert!(
            broken.reason.contains("scheduler lag p99"),
            "{}",
            broken.reason
        );
        // Arrivals never sent before the end break a stage and the run...
        let mut missing = open_stage(base, 1000.0, 10_000, 0, 0);
        missing.total.metrics.arrivals += 500;
        missing.total.metrics.missed_arrivals = 500;
        let run = run_of(vec![missing.clone()]);
        let reason = super::knee(&run).unwrap().first_broken.unwrap().reason;
        assert!(reason.contains("500 arrivals missed"), "{reason}");
        let verdict = judge(&run);
        assert_eq!(verdict.exit, Exit::Invalid);
        assert!(verdict.generator.invalid_reasons[0].contains("500 of 10500 arrivals missed"));
        // ...but one at the very end (within 0.1 %) is routine.
        missing.total.metrics.arrivals = 10_001;
        missing.total.metrics.missed_arrivals = 1;
        let run = run_of(vec![missing]);
        assert!(super::knee(&run).unwrap().first_broken.is_none());
        assert!(judge(&run).generator.valid);
    }

    #[test]
    fn scheduler_lag_is_fine_then_a_caution_then_invalid() {
        let (fixed, _) = crate::report::fixture::fixed();
        // 1,000 arrivals; the slowest `late` of them `lag_us` late, the
        // rest 100 µs: 20 late ones put the p99 among them, 5 do not.
        let run_with = |late: u64, lag_us: u64| {
            let mut stage = open_stage(&fixed.stages[1], 100.0, 1_000, 0, 0);
            for k in 0..1_000 {
                stage
                    .total
                    .metrics
                    .sched_lag
                    .record_us(if k < late { lag_us } else { 100 });
            }
            run_of(vec![stage])
        };
        let fine = judge(&run_with(5, 30_000));
        assert!(fine.generator.valid && fine.generator.cautions.is_empty());
        let late = judge(&run_with(20, 3_000));
        assert!(late.generator.valid);
        assert_eq!(
            late.generator.cautions.len(),
            1,
            "{:?}",
            late.generator.cautions
        );
        assert!(late.generator.cautions[0].contains("scheduler lag p99 3.0 ms > 1 ms"));
        // Past the invalid limit it is no longer a caution but a verdict.
        let saturated = judge(&run_with(20, 60_000));
        assert!(saturated.generator.cautions.is_empty());
        assert_eq!(saturated.generator.invalid_reasons.len(), 1);
        assert_eq!(saturated.exit, Exit::Invalid);
    }

    #[test]
    fn a_starved_generator_is_a_caution_then_invalid() {
        let (mut run, _) = crate::report::fixture::fixed();
        run.plan.thresholds = Thresholds::default();
        run.stages[0].shard_wait_pct = vec![1.0, 14.0];
        run.stages[0].shard_wait_per_run_ms = vec![0.001, 0.09];
        assert!(judge(&run).generator.cautions.is_empty());
        run.stages[0].shard_wait_per_run_ms = vec![0.001, 0.22];
        let v = judge(&run);
        assert!(v.generator.valid);
        assert!(
            v.generator.cautions[0]
                .contains("shard 1 waited 0.22 ms for its CPU each time it woke (over 0.1 ms; 14% of the stage"),
            "{:?}",
            v.generator.cautions
        );
        run.stages[0].shard_wait_per_run_ms = vec![1.5, 0.22];
        let v = judge(&run);
        assert_eq!(v.exit, Exit::Invalid);
        assert!(v.generator.invalid_reasons[0].contains("shard 0 waited 1.50 ms"));
        run.stages[0].shard_wait_per_run_ms = Vec::new();
        run.stages[1].steal_pct = Some(7.5);
        let v = judge(&run);
        assert!(
            v.generator.cautions[0].contains("stole 7.5%"),
            "{:?}",
            v.generator.cautions
        );
    }

    #[test]
    fn a_saturated_shard_is_a_caution() {
        let (mut run, _) = crate::report::fixture::fixed();
        run.stages[1].shard_busy_pct = vec![50.0, 96.0];
        let v = validity(&run);
        assert!(v.valid);
        assert_eq!(v.cautions.len(), 1, "{:?}", v.cautions);
        assert!(
            v.cautions[0].starts_with("stage @100:10s: generator shard 1 was 96% busy"),
            "{}",
            v.cautions[0]
        );
    }

    #[test]
    fn connections_past_half_the_port_range_are_a_caution() {
        let (mut run, _) = crate::report::fixture::fixed();
        // Half of the 28,232 ports is 14,116.
        run.stages[0].connections_open = vec![14_116];
        assert!(validity(&run).cautions.is_empty());
        run.stages[0].connections_open = vec![14_117];
        let v = validity(&run);
        assert_eq!(v.cautions.len(), 1, "{:?}", v.cautions);
        assert!(v.cautions[0].contains("14117 connections open to 1 target address(es)"));
        assert!(v.cautions[0].contains("32768-60999"));
        // A second host with a wide range and few connections adds nothing.
        run.hosts.push(crate::results::Host {
            run_id: "other".into(),
            local_port_range: Some((1024, 65535)),
            ..Default::default()
        });
        run.stages[0].connections_open.push(20_000);
        assert_eq!(validity(&run).cautions.len(), 1);
        run.hosts[0].local_port_range = None;
        assert!(validity(&run).cautions.is_empty());
    }

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
