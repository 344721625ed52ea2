//! Merging summaries of one run from several generator hosts into one,
//! exactly: counters add, HDR histograms add bucket by bucket (so every
//! percentile is that of all requests), per-second series add on the
//! wall-clock second, and the derived figures are computed again.
//!
//! The hosts must have run the same stages and scenarios in overlapping
//! windows; a summary cannot be merged with itself.

use super::{RunSummary, SeriesPoint, StageSummary};
use crate::stage::Load;
use std::collections::BTreeMap;

/// Merges `(file name, summary)` pairs; the error is one line naming the
/// file at fault.
pub fn merge(summaries: Vec<(String, RunSummary)>) -> Result<RunSummary, String> {
    let mut inputs = summaries.into_iter();
    let Some((first_name, mut merged)) = inputs.next() else {
        return Err("nothing to merge".into());
    };
    let mut names = vec![first_name.clone()];
    for (name, other) in inputs {
        check_fits(&merged, &first_name, &other, &name)?;
        for (mine, theirs) in merged.stages.iter_mut().zip(other.stages) {
            merge_stage(mine, theirs);
        }
        merged.hosts.extend(other.hosts);
        merged.plan.max_inflight += other.plan.max_inflight;
        merged.plan.pacer_tick_us = merged.plan.pacer_tick_us.max(other.plan.pacer_tick_us);
        merged.plan.shards += other.plan.shards;
        merged.plan.cpus.extend(other.plan.cpus);
        merged.started_unix_ms = merged.started_unix_ms.min(other.started_unix_ms);
        if merged.stop.is_none() {
            merged.stop = other.stop;
        }
        names.push(name);
    }
    merged.started = super::rfc3339(super::from_unix_ms(merged.started_unix_ms));
    merged.run_id = format!("merged-{}", merged.hosts.len());
    merged.merged_from = names;
    merged.derive();
    Ok(merged)
}

/// Refuses a summary that is not another host's part of the same run.
fn check_fits(
    merged: &RunSummary,
    first: &str,
    other: &RunSummary,
    name: &str,
) -> Result<(), String> {
    for host in &other.hosts {
        if merged.hosts.iter().any(|h| h.run_id == host.run_id) {
            return Err(format!(
                "{name}: run {} is already in the merge (the same summary twice?)",
                host.run_id
            ));
        }
    }
    let labels = |s: &RunSummary| s.stages.iter().map(|x| x.label.clone()).collect::<Vec<_>>();
    if labels(other) != labels(merged) {
        return Err(format!(
            "{name}: stages {:?} do not line up with {first}'s {:?}",
            labels(other),
            labels(merged)
        ));
    }
    let scenarios = |s: &RunSummary| {
        s.plan
            .scenarios
            .iter()
            .map(|x| x.label())
            .collect::<Vec<_>>()
    };
    if scenarios(other) != scenarios(merged) {
        return Err(format!(
            "{name}: scenarios {:?} do not line up with {first}'s {:?}",
            scenarios(other),
            scenarios(merged)
        ));
    }
    for (mine, theirs) in merged.stages.iter().zip(&other.stages) {
        let (a_from, a_to) = mine.window_unix_ms(merged.plan.warmup_s);
        let (b_from, b_to) = theirs.window_unix_ms(other.plan.warmup_s);
        let gap_ms = a_from.max(b_from).saturating_sub(a_to.min(b_to));
        if a_from.max(b_from) >= a_to.min(b_to) {
            return Err(format!(
                "{name}: stage {} ({}) was measured {:.3} s apart from the others' window, not at the same time; hosts of one run measure the same window",
                theirs.index + 1,
                theirs.label,
                gap_ms as f64 / 1000.0
            ));
        }
    }
    Ok(())
}

/// Adds `theirs` into `mine` (same stage of another host).
fn merge_stage(mine: &mut StageSummary, theirs: StageSummary) {
    mine.total.metrics.merge(&theirs.total.metrics);
    for (a, b) in mine.scenarios.iter_mut().zip(&theirs.scenarios) {
        a.metrics.merge(&b.metrics);
    }
    mine.load = match (mine.load, theirs.load) {
        (Load::Closed { users: a }, Load::Closed { users: b }) => Load::Closed { users: a + b },
        (Load::Open { rate: a, poisson }, Load::Open { rate: b, .. }) => Load::Open {
            rate: a + b,
            poisson,
        },
        (load, _) => load,
    };
    // Rates add when the windows coincide: the longest window keeps a
    // host that was stopped early from inflating the others' rate.
    mine.measured_s = mine.measured_s.max(theirs.measured_s);
    mine.elapsed_s = mine.elapsed_s.max(theirs.elapsed_s);
    mine.started_unix_ms = mine.started_unix_ms.min(theirs.started_unix_ms);
    mine.stopped_early |= theirs.stopped_early;
    mine.shard_cpu_s.extend(theirs.shard_cpu_s);
    mine.shard_busy_pct.extend(theirs.shard_busy_pct);
    mine.shard_wait_pct.extend(theirs.shard_wait_pct);
    mine.shard_wait_per_run_ms
        .extend(theirs.shard_wait_per_run_ms);
    mine.steal_pct = match (mine.steal_pct, theirs.steal_pct) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    mine.connections_open.extend(theirs.connections_open);
    for (address, n) in theirs.requests_by_address {
        *mine.requests_by_address.entry(address).or_default() += n;
    }
    mine.series = merge_series(
        std::mem::take(&mut mine.series),
        theirs.series,
        mine.started_unix_ms,
    );
}

/// Adds two series point by point on the wall-clock second.
fn merge_series(a: Vec<SeriesPoint>, b: Vec<SeriesPoint>, start_unix_ms: u64) -> Vec<SeriesPoint> {
    let mut by_second: BTreeMap<u64, SeriesPoint> = BTreeMap::new();
    for point in a.into_iter().chain(b) {
        match by_second.get_mut(&point.unix_s) {
            Some(have) => {
                have.window.merge(&point.window);
                have.in_flight += point.in_flight;
                have.warmup |= point.warmup;
            }
            None => {
                by_second.insert(point.unix_s, point);
            }
        }
    }
    let start_s = start_unix_ms / 1000;
    by_second
        .into_values()
        .map(|mut p| {
            p.second = u32::try_from(p.unix_s.saturating_sub(start_s)).unwrap_or(u32::MAX);
            p
        })
        .collect()
}
