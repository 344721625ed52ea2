//! Whether a comparison's deltas are overheads: the services of a stage
//! must have been offered the same traffic and have answered it alike. A
//! service whose error rate stands out, or (open loop) that was sent
//! noticeably fewer arrivals than the others, is flagged, because its
//! figures then describe different work and its delta is not an overhead.
//!
//! In a closed-loop stage every service has the same users, and a slower
//! service completes fewer requests by design (each user waits for its
//! answers), so request counts are not compared there.

use crate::limits;
use crate::results::{RunSummary, StageSummary};

/// Every fairness flag of a run, readable; empty without services.
pub fn fairness(run: &RunSummary) -> Vec<String> {
    run.stages
        .iter()
        .filter(|s| s.services.len() > 1)
        .flat_map(stage_flags)
        .collect()
}

fn stage_flags(stage: &StageSummary) -> Vec<String> {
    let at = format!(
        "stage {} {} round {}",
        stage.index + 1,
        stage.label,
        stage.round
    );
    let mut flags = Vec::new();
    let error_pct = |i: usize| 100.0 * stage.services[i].rates.error_rate;
    let answered: Vec<usize> = (0..stage.services.len())
        .filter(|&i| stage.services[i].metrics.requests > 0)
        .collect();
    let best = answered
        .iter()
        .map(|&i| error_pct(i))
        .fold(f64::INFINITY, f64::min);
    for (i, service) in stage.services.iter().enumerate() {
        if service.metrics.requests == 0 {
            flags.push(format!(
                "{at}: {} finished no request, so it has no figures to compare",
                service.name
            ));
            continue;
        }
        if error_pct(i) - best > limits::FAIRNESS_ERROR_POINTS {
            flags.push(format!(
                "{at}: {} failed {:.1} % of its requests against {best:.1} % for the best service; its delta is not an overhead",
                service.name,
                error_pct(i)
            ));
        }
    }
    if stage.is_open() {
        let most = stage
            .services
            .iter()
            .map(|s| s.metrics.arrivals_sent)
            .max()
            .unwrap_or(0);
        for service in &stage.services {
            let m = &service.metrics;
            if (m.arrivals_sent as f64) < most as f64 * (1.0 - limits::FAIRNESS_SHORTFALL) {
                flags.push(format!(
                    "{at}: {} was sent {} arrivals against {most} for another service ({} dropped at max_inflight, {} missed); its figures describe less load",
                    service.name, m.arrivals_sent, m.dropped_arrivals, m.missed_arrivals
                ));
            }
        }
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::ErrorClass;

    fn compared(requests: [u64; 2], failed: [u64; 2]) -> RunSummary {
        let (mut run, _) = crate::report::fixture::fixed();
        let stage = &mut run.stages[0];
        stage.scenarios.truncate(1);
        let mut lanes = Vec::new();
        for (k, name) in ["direct", "gw"].into_iter().enumerate() {
            let mut lane = stage.scenarios[0].clone();
            lane.service = Some(name.into());
            let m = &mut lane.metrics;
            m.requests = requests[k];
            m.ok = requests[k] - failed[k];
            m.errors = Default::default();
            m.errors[ErrorClass::Http5xx as usize] = failed[k];
            lanes.push(lane);
        }
        stage.scenarios = lanes;
        run.stages.truncate(1);
        run.derive();
        run
    }

    #[test]
    fn a_service_failing_far_more_than_the_best_is_flagged_alone() {
        assert!(fairness(&compared([100, 100], [0, 3])).is_empty());
        let flags = fairness(&compared([100, 100], [0, 100]));
        assert_eq!(flags.len(), 1, "{flags:?}");
        assert!(flags[0].contains("gw failed 100.0 %"), "{flags:?}");
        let flags = fairness(&compared([100, 0], [0, 0]));
        assert!(flags[0].contains("gw finished no request"), "{flags:?}");
    }
}
