//! Services side by side: for each stage (each round's, and each of the
//! profile's stages over all rounds) every service's figures and its delta
//! against the baseline. Derived from the per-service statistics, so it is
//! written for readers and computed again after every read or merge.
//!
//! The deltas are the gateway's overhead because every service ran in the
//! same window, on the same shards, with the same users and content: the
//! upstream's drift is common to all and cancels in the difference. They
//! are differences of percentiles (p50 of one minus p50 of the other), not
//! percentiles of per-request differences, which a load test cannot pair.

use super::plan_info::Range;
use super::{Rates, StageMetrics, StageSummary, Stats};
use serde::Serialize;

/// Every comparison of a run with services. Derived.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Comparison {
    /// The service named as the baseline (`None`: the fastest in each
    /// stage and round, by TTFT p50, or latency p50 when not streamed).
    pub baseline: Option<String>,
    /// Times the stage list ran.
    pub rounds: u32,
    /// Every stage as run, round after round.
    pub stages: Vec<StageComparison>,
    /// Each stage of the profile over all rounds: histograms pooled, with
    /// the spread of the per-round deltas.
    pub overall: Vec<StageComparison>,
}

/// The services in one stage (or one profile stage over all rounds).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StageComparison {
    /// The stage as written.
    pub stage: String,
    /// Index into the run's stages (overall: of its first round's).
    pub index: usize,
    /// Its round (`None`: over all rounds).
    pub round: Option<u32>,
    /// The service the deltas are against (`None`: no service succeeded).
    pub baseline: Option<String>,
    /// Some response was streamed, so TTFT is compared; otherwise only
    /// latency.
    pub streamed: bool,
    /// One row per service, in the plan's order.
    pub services: Vec<ServiceRow>,
}

/// One service's figures and deltas. Milliseconds throughout.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServiceRow {
    /// The service.
    pub service: String,
    /// Requests measured.
    pub requests: u64,
    /// Requests per second.
    pub rps: f64,
    /// Successful / all, percent.
    pub ok_pct: f64,
    /// Failed requests.
    pub errors: u64,
    /// TTFT p50 (streamed only).
    pub ttft_ms_p50: Option<f64>,
    /// TTFT p95.
    pub ttft_ms_p95: Option<f64>,
    /// Latency p50.
    pub latency_ms_p50: Option<f64>,
    /// Latency p95.
    pub latency_ms_p95: Option<f64>,
    /// TTFT p50 minus the baseline's.
    pub ttft_ms_p50_delta: Option<f64>,
    /// TTFT p95 minus the baseline's.
    pub ttft_ms_p95_delta: Option<f64>,
    /// Latency p50 minus the baseline's.
    pub latency_ms_p50_delta: Option<f64>,
    /// Latency p95 minus the baseline's.
    pub latency_ms_p95_delta: Option<f64>,
    /// Over all rounds: the smallest and largest per-round delta of each
    /// figure, so an overhead can be told from noise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spread: Option<Spread>,
}

/// The per-round range of each delta.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Spread {
    /// Of `ttft_ms_p50_delta`.
    pub ttft_ms_p50_delta: Option<Range<f64>>,
    /// Of `ttft_ms_p95_delta`.
    pub ttft_ms_p95_delta: Option<Range<f64>>,
    /// Of `latency_ms_p50_delta`.
    pub latency_ms_p50_delta: Option<Range<f64>>,
    /// Of `latency_ms_p95_delta`.
    pub latency_ms_p95_delta: Option<Range<f64>>,
}

/// The names of the four deltas, in the order `ServiceRow::deltas` and
/// `Spread::ranges` give them.
pub const DELTA_FIGURES: [&str; 4] = ["ttft_p50", "ttft_p95", "latency_p50", "latency_p95"];

impl Spread {
    /// The ranges in `DELTA_FIGURES` order.
    pub fn ranges(&self) -> [Option<Range<f64>>; 4] {
        [
            self.ttft_ms_p50_delta,
            self.ttft_ms_p95_delta,
            self.latency_ms_p50_delta,
            self.latency_ms_p95_delta,
        ]
    }
}

impl ServiceRow {
    /// The deltas in `DELTA_FIGURES` order.
    pub fn deltas(&self) -> [Option<f64>; 4] {
        [
            self.ttft_ms_p50_delta,
            self.ttft_ms_p95_delta,
            self.latency_ms_p50_delta,
            self.latency_ms_p95_delta,
        ]
    }
    /// The figures of one service's statistics (deltas not yet taken).
    fn of(stats: &Stats, streamed: bool) -> ServiceRow {
        let m = &stats.metrics;
        let ttft = |p| streamed.then(|| m.ttft.percentile_ms(p)).flatten();
        ServiceRow {
            service: stats.name.clone(),
            requests: m.requests,
            rps: stats.rates.rps,
            ok_pct: stats.rates.ok_pct,
            errors: m.errors_total(),
            ttft_ms_p50: ttft(50.0),
            ttft_ms_p95: ttft(95.0),
            latency_ms_p50: m.latency.percentile_ms(50.0),
            latency_ms_p95: m.latency.percentile_ms(95.0),
            ..ServiceRow::default()
        }
    }

    /// The figure the fastest service is picked by.
    fn speed(&self, streamed: bool) -> Option<f64> {
        if streamed {
            self.ttft_ms_p50
        } else {
            self.latency_ms_p50
        }
    }

    /// Takes this row's deltas against `base`.
    fn delta_from(&mut self, base: &ServiceRow) {
        let d = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
        self.ttft_ms_p50_delta = d(self.ttft_ms_p50, base.ttft_ms_p50);
        self.ttft_ms_p95_delta = d(self.ttft_ms_p95, base.ttft_ms_p95);
        self.latency_ms_p50_delta = d(self.latency_ms_p50, base.latency_ms_p50);
        self.latency_ms_p95_delta = d(self.latency_ms_p95, base.latency_ms_p95);
    }
}

impl StageComparison {
    /// One finished stage's services compared (`None` without services),
    /// as the console shows it when the stage ends.
    pub fn of_stage(stage: &StageSummary, baseline: Option<&str>) -> Option<StageComparison> {
        (!stage.services.is_empty())
            .then(|| StageComparison::of(stage, &stage.services, Some(stage.round), baseline))
    }

    /// Compares the per-service statistics of one stage (or one pooled
    /// stage) against `baseline` (a service name), or the fastest.
    fn of(
        stage: &StageSummary,
        services: &[Stats],
        round: Option<u32>,
        baseline: Option<&str>,
    ) -> StageComparison {
        let streamed = services.iter().any(|s| s.metrics.ttft.count() > 0);
        let mut rows: Vec<ServiceRow> = services
            .iter()
            .map(|s| ServiceRow::of(s, streamed))
            .collect();
        let base = match baseline {
            Some(name) => rows.iter().position(|r| r.service == name),
            None => (0..rows.len())
                .filter(|&i| rows[i].speed(streamed).is_some())
                .min_by(|&a, &b| {
                    let speed = |i: usize| rows[i].speed(streamed).unwrap_or(f64::MAX);
                    speed(a).total_cmp(&speed(b))
                }),
        };
        let base_row = base.map(|i| rows[i].clone());
        if let Some(base_row) = &base_row {
            for row in &mut rows {
                row.delta_from(base_row);
            }
        }
        StageComparison {
            stage: stage.label.clone(),
            index: stage.index,
            round,
            baseline: base_row.map(|r| r.service),
            streamed,
            services: rows,
        }
    }
}

impl Comparison {
    /// The comparison of `stages` (each with its per-service statistics
    /// derived), of a plan of `per_round` stages run `rounds` times (a
    /// stopped run has fewer); `None` without services.
    pub fn of(
        stages: &[StageSummary],
        baseline: Option<&str>,
        rounds: u32,
        per_round: usize,
    ) -> Option<Comparison> {
        if stages.iter().all(|s| s.services.is_empty()) {
            return None;
        }
        let per_round = per_round.max(1);
        let each: Vec<StageComparison> = stages
            .iter()
            .map(|s| StageComparison::of(s, &s.services, Some(s.round), baseline))
            .collect();
        let overall = (0..per_round.min(stages.len()))
            .map(|position| {
                let rounds: Vec<usize> = (position..stages.len()).step_by(per_round).collect();
                pooled(stages, &each, &rounds, baseline)
            })
            .collect();
        Some(Comparison {
            baseline: baseline.map(str::to_string),
            rounds,
            stages: each,
            overall,
        })
    }
}

/// One profile stage over the rounds at `indexes`: each service's
/// histograms pooled, deltas taken on the pooled figures, and the spread of
/// the per-round deltas beside them.
fn pooled(
    stages: &[StageSummary],
    each: &[StageComparison],
    indexes: &[usize],
    baseline: Option<&str>,
) -> StageComparison {
    let first = &stages[indexes[0]];
    let measured: f64 = indexes.iter().map(|&i| stages[i].measured_s).sum();
    let services: Vec<Stats> = first
        .services
        .iter()
        .enumerate()
        .map(|(k, service)| {
            let mut metrics = StageMetrics::new();
            for &i in indexes {
                if let Some(s) = stages[i].services.get(k) {
                    metrics.merge(&s.metrics);
                }
            }
            let mut stats = Stats::new(service.name.clone(), metrics);
            stats.rates = Rates::of(&stats.metrics, measured);
            stats
        })
        .collect();
    let mut out = StageComparison::of(first, &services, None, baseline);
    for (k, row) in out.services.iter_mut().enumerate() {
        let per_round: Vec<&ServiceRow> = indexes
            .iter()
            .filter_map(|&i| each[i].services.get(k))
            .collect();
        let range = |get: fn(&ServiceRow) -> Option<f64>| {
            let values: Vec<f64> = per_round.iter().filter_map(|r| get(r)).collect();
            let min = values.iter().copied().reduce(f64::min)?;
            let max = values.iter().copied().reduce(f64::max)?;
            Some(Range { min, max })
        };
        row.spread = Some(Spread {
            ttft_ms_p50_delta: range(|r| r.ttft_ms_p50_delta),
            ttft_ms_p95_delta: range(|r| r.ttft_ms_p95_delta),
            latency_ms_p50_delta: range(|r| r.latency_ms_p50_delta),
            latency_ms_p95_delta: range(|r| r.latency_ms_p95_delta),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::ErrorClass;

    /// A stage of two services whose TTFTs are all `ttft_ms`.
    fn stage(index: usize, round: u32, ttft_ms: [u64; 2]) -> StageSummary {
        let (run, _) = crate::report::fixture::fixed();
        let mut stage = run.stages[0].clone();
        stage.index = index;
        stage.round = round;
        let mut lanes = Vec::new();
        for (k, name) in ["direct", "gw"].into_iter().enumerate() {
            let mut m = StageMetrics::new();
            for _ in 0..10 {
                m.requests += 1;
                m.ok += 1;
                m.ttft.record_us(ttft_ms[k] * 1000);
                m.latency.record_us(ttft_ms[k] * 1000 + 5_000);
            }
            m.count_error(ErrorClass::Timeout);
            m.requests += 1;
            let mut lane = Stats::new("chat", m);
            lane.service = Some(name.into());
            lanes.push(lane);
        }
        stage.scenarios = lanes;
        stage.derive();
        stage
    }

    #[test]
    fn a_stopped_run_pools_each_profile_stage_over_the_rounds_it_reached() {
        // Two stages per round, three rounds planned, stopped after three.
        let stages = vec![
            stage(0, 1, [20, 50]),
            stage(1, 1, [20, 24]),
            stage(2, 2, [20, 52]),
        ];
        let c = Comparison::of(&stages, Some("direct"), 3, 2).unwrap();
        assert_eq!(c.stages.len(), 3);
        assert_eq!(c.overall.len(), 2);
        let gw = |s: &StageComparison| s.services[1].clone();
        let first = gw(&c.overall[0]);
        assert_eq!(first.requests, 22, "rounds 1 and 2 pooled");
        let spread = first.spread.unwrap().ttft_ms_p50_delta.unwrap();
        assert!((spread.min - 30.0).abs() < 0.1 && (spread.max - 32.0).abs() < 0.1);
        let second = gw(&c.overall[1]);
        assert_eq!(second.requests, 11, "only round 1 reached it");
        assert!((second.ttft_ms_p50_delta.unwrap() - 4.0).abs() < 0.1);
        assert!(c.stages.iter().all(|s| s.streamed));
    }

    #[test]
    fn without_a_named_baseline_the_fastest_is_it_and_without_services_nothing() {
        let stages = vec![stage(0, 1, [30, 20])];
        let c = Comparison::of(&stages, None, 1, 1).unwrap();
        assert_eq!(c.stages[0].baseline.as_deref(), Some("gw"));
        let direct = &c.stages[0].services[0];
        assert!((direct.ttft_ms_p50_delta.unwrap() - 10.0).abs() < 0.1);
        let mut plain = stages[0].clone();
        for lane in &mut plain.scenarios {
            lane.service = None;
        }
        plain.derive();
        assert_eq!(Comparison::of(&[plain], None, 1, 1), None);
    }
}
