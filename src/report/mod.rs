//! Report writers: the console table, `report-<id>.txt`, `report-<id>.csv`,
//! `report-<id>.html` (with `svg`'s charts), `metrics-<id>.prom` and
//! `summary-<id>.json`.
//!
//! Every writer takes a `RunSummary` (a live run's, a read one or a merged
//! one) and its `Verdict`, and does no measuring and no judging of its
//! own. Percentiles come from the merged HDR histograms (3 significant
//! digits), never from sorted samples.

pub mod comparison;
pub mod console;
pub mod csv;
pub mod html;
pub mod live;
pub mod prometheus;
pub mod summary;
pub mod svg;
pub mod text;

use crate::results::{Hist, RunSummary, StageMetrics};

/// Scenario `index`'s metrics over every stage of the run (for the
/// per-turn tables and charts).
fn scenario_across_stages(run: &RunSummary, index: usize) -> StageMetrics {
    let mut merged = StageMetrics::new();
    for stage in &run.stages {
        if let Some(stats) = stage.scenarios.get(index) {
            merged.merge(&stats.metrics);
        }
    }
    merged
}

/// A figure in milliseconds with two decimals, or `-` when there is none.
fn ms(value: Option<f64>) -> String {
    value.map_or("-".to_string(), |v| format!("{v:.2}"))
}

/// A histogram's percentile in milliseconds, or `-` when it is empty.
fn pct(h: &Hist, p: f64) -> String {
    ms(h.percentile_ms(p))
}

/// `200=10 503=2`, or `-`.
fn status_text(m: &StageMetrics, separator: &str) -> String {
    let list: Vec<String> = m
        .status_counts()
        .iter()
        .map(|(c, n)| format!("{c}={n}"))
        .collect();
    list.join(separator)
}

/// `http_5xx=2 timeout=1`, or empty.
fn errors_text(m: &StageMetrics, separator: &str) -> String {
    let list: Vec<String> = m
        .error_counts()
        .iter()
        .map(|(c, n)| format!("{}={n}", c.name()))
        .collect();
    list.join(separator)
}

/// Width of the scenario column: the longest name, at least 14.
fn name_width<'a>(names: impl Iterator<Item = &'a str>) -> usize {
    names.map(|n| n.chars().count()).max().unwrap_or(0).max(14)
}

#[cfg(test)]
pub(crate) mod fixture;
