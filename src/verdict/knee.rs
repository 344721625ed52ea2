//! The knee of an open-loop sweep: the highest-rate stage that held its
//! target and the first that did not, and why an open-loop stage did not
//! deliver its load.

use super::health::lag_invalid;
use crate::limits;
use crate::results::{RunSummary, StageMetrics, StageSummary};
use serde::Serialize;

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
pub(super) fn missed_share(m: &StageMetrics) -> Option<f64> {
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

#[cfg(test)]
mod tests {
    use super::super::test_support::{open_stage, run_of};
    use super::super::{judge, Exit};
    use super::*;

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
}
