//! Whether the generator, not the target, was measured: what makes a run
//! invalid (generator-side errors, lost records, a pacer that could not
//! keep up, a starved shard) and what only asks for care.

use super::knee::missed_share;
use crate::limits;
use crate::results::{RunSummary, StageSummary, Stop};
use serde::Serialize;

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
pub(super) fn lag_invalid(stage: &StageSummary) -> Option<String> {
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
    if run.plan.tls.as_ref().is_some_and(|tls| !tls.verify) {
        out.push(
            "TLS certificates were not verified (--insecure): the answers may not have come from the gateway named"
                .to_string(),
        );
    }
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
    use super::super::test_support::{open_stage, run_of};
    use super::super::{judge, Exit};
    use super::*;
    use crate::plan::Thresholds;

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
}
