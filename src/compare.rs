//! `loadtest compare`: a baseline run against a new one, figure by figure,
//! with regressions flagged for CI.
//!
//! Stages pair by position and label (the same stage list twice pairs
//! each stage with its own counterpart); within a pair, scenarios pair by
//! name (`chat@gw` with services), each service's total by its name
//! (`all@gw`), plus the stage totals. A stage or scenario present on one side
//! only is reported as such, never skipped in silence.

use crate::report::html::{nines, nines_label, LADDER, STYLE};
use crate::report::svg::{escape, line_chart, Chart, Scale, Series};
use crate::results::{Hist, RunSummary, StageSummary, Stats};
use crate::verdict;
use serde::Serialize;
use std::fmt::Write as _;

/// One compared figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delta {
    /// Stage label.
    pub stage: String,
    /// Stage position (0-based).
    pub stage_index: usize,
    /// Scenario, or `all`.
    pub scenario: String,
    /// Which figure.
    pub metric: &'static str,
    /// Baseline value.
    pub old: f64,
    /// New value.
    pub new: f64,
    /// Worse by more than the allowed percentage.
    pub regression: bool,
}

/// Something on one side only.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OneSided {
    /// `old` or `new`.
    pub side: &'static str,
    /// Stage position (0-based).
    pub stage_index: usize,
    /// Stage label.
    pub stage: String,
    /// The scenario, when a scenario (not a whole stage) is one-sided.
    pub scenario: Option<String>,
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Figures of paired stages and scenarios.
    pub deltas: Vec<Delta>,
    /// Stages and scenarios on one side only.
    pub one_sided: Vec<OneSided>,
    /// Regressions among the deltas.
    pub regressions: usize,
    /// The allowed change for the worse, percent.
    pub regress_pct: f64,
    /// Cautions about either run (invalid, interrupted).
    pub notes: Vec<String>,
}

/// Compares `new` against `old`. A change for the worse by more than
/// `regress_pct` percent is a regression (for the error rate, also by at
/// least 0.1 percentage point, so 0.01 % → 0.02 % is not one).
pub fn compare(old: &RunSummary, new: &RunSummary, regress_pct: f64) -> Result<Comparison, String> {
    let mut out = Comparison {
        deltas: Vec::new(),
        one_sided: Vec::new(),
        regressions: 0,
        regress_pct,
        notes: notes(old, new),
    };
    let count = old.stages.len().max(new.stages.len());
    let mut paired = 0;
    for index in 0..count {
        match (old.stages.get(index), new.stages.get(index)) {
            (Some(a), Some(b)) if a.label == b.label => {
                paired += 1;
                compare_stage(&mut out, a, b);
            }
            (a, b) => {
                for (side, stage) in [("old", a), ("new", b)] {
                    if let Some(stage) = stage {
                        out.one_sided.push(OneSided {
                            side,
                            stage_index: index,
                            stage: stage.label.clone(),
                            scenario: None,
                        });
                    }
                }
            }
        }
    }
    if paired == 0 {
        return Err(
            "the two runs have no stage in common (stages pair by position and label, e.g. 10:60s)"
                .into(),
        );
    }
    out.regressions = out.deltas.iter().filter(|d| d.regression).count();
    Ok(out)
}

/// What makes either side's numbers doubtful.
fn notes(old: &RunSummary, new: &RunSummary) -> Vec<String> {
    let mut notes = Vec::new();
    for (side, run) in [("old", old), ("new", new)] {
        let v = verdict::judge(run);
        for reason in &v.generator.invalid_reasons {
            notes.push(format!("{side} run is invalid: {reason}"));
        }
        if matches!(v.exit, verdict::Exit::Interrupted(_)) {
            notes.push(format!("{side} run was stopped early"));
        }
    }
    notes
}

/// The rows of a stage that pair with the other run's, by key: each
/// scenario's (`chat`, or `chat@gw` with services; only when there are
/// several), and each service's total (`all@gw`).
fn keyed(stage: &StageSummary) -> Vec<(String, &Stats)> {
    let mut rows: Vec<(String, &Stats)> = Vec::new();
    if stage.scenarios.len() > stage.services.len().max(1) || stage.services.is_empty() {
        rows.extend(stage.scenarios.iter().map(|s| (s.label(), s)));
    }
    rows.extend(
        stage
            .services
            .iter()
            .map(|s| (format!("all@{}", s.name), s)),
    );
    rows
}

fn compare_stage(out: &mut Comparison, a: &StageSummary, b: &StageSummary) {
    let mut pairs: Vec<(String, &Stats, &Stats)> = vec![("all".into(), &a.total, &b.total)];
    let several = a.scenarios.len() > 1 || b.scenarios.len() > 1;
    let (old_rows, new_rows) = (keyed(a), keyed(b));
    for (key, s) in &old_rows {
        match new_rows.iter().find(|(k, _)| k == key) {
            Some((_, n)) if several => pairs.push((key.clone(), s, n)),
            Some(_) => {}
            None => out.one_sided.push(OneSided {
                side: "old",
                stage_index: a.index,
                stage: a.label.clone(),
                scenario: Some(key.clone()),
            }),
        }
    }
    for (key, _) in &new_rows {
        if !old_rows.iter().any(|(k, _)| k == key) {
            out.one_sided.push(OneSided {
                side: "new",
                stage_index: b.index,
                stage: b.label.clone(),
                scenario: Some(key.clone()),
            });
        }
    }
    for (key, o, n) in pairs {
        for (metric, old, new, higher_is_worse) in figures(o, n) {
            let (Some(old), Some(new)) = (old, new) else {
                continue;
            };
            let worse = if higher_is_worse {
                new - old
            } else {
                old - new
            };
            let relative = if old.abs() > f64::EPSILON {
                100.0 * worse / old.abs()
            } else if worse > 0.0 {
                f64::INFINITY
            } else {
                0.0
            };
            let mut regression = relative > out.regress_pct;
            if metric == "error_rate" {
                regression &= worse >= 0.001;
            }
            out.deltas.push(Delta {
                stage: a.label.clone(),
                stage_index: a.index,
                scenario: key.clone(),
                metric,
                old,
                new,
                regression,
            });
        }
    }
}

type Figure = (&'static str, Option<f64>, Option<f64>, bool);

/// The compared figures of a pair: name, old, new, higher is worse.
fn figures(o: &Stats, n: &Stats) -> Vec<Figure> {
    let (om, nm) = (&o.metrics, &n.metrics);
    let mut out: Vec<Figure> = vec![("rps", Some(o.rates.rps), Some(n.rates.rps), false)];
    for (metric, p) in [
        ("latency_p50_ms", 50.0),
        ("latency_p95_ms", 95.0),
        ("latency_p99_ms", 99.0),
    ] {
        out.push((
            metric,
            om.latency.percentile_ms(p),
            nm.latency.percentile_ms(p),
            true,
        ));
    }
    for (metric, p) in [
        ("ttft_p50_ms", 50.0),
        ("ttft_p95_ms", 95.0),
        ("ttft_p99_ms", 99.0),
    ] {
        out.push((
            metric,
            om.ttft.percentile_ms(p),
            nm.ttft.percentile_ms(p),
            true,
        ));
    }
    out.push((
        "error_rate",
        Some(o.rates.error_rate),
        Some(n.rates.error_rate),
        true,
    ));
    out
}

/// The comparison as a table for the console.
pub fn table(c: &Comparison) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<14} {:<14} {:<15} {:>12} {:>12} {:>9}  verdict",
        "stage", "scenario", "metric", "old", "new", "change"
    );
    for d in &c.deltas {
        let change = if d.old.abs() > f64::EPSILON {
            format!("{:+.1}%", 100.0 * (d.new - d.old) / d.old.abs())
        } else {
            "-".to_string()
        };
        let _ = writeln!(
            out,
            "{:<14} {:<14} {:<15} {:>12.3} {:>12.3} {:>9}  {}",
            d.stage,
            d.scenario,
            d.metric,
            d.old,
            d.new,
            change,
            if d.regression { "REGRESSION" } else { "ok" }
        );
    }
    for one in &c.one_sided {
        let what = match &one.scenario {
            Some(name) => format!(
                "scenario {name} of stage {} ({})",
                one.stage_index + 1,
                one.stage
            ),
            None => format!("stage {} ({})", one.stage_index + 1, one.stage),
        };
        let _ = writeln!(out, "only in the {} run: {what}", one.side);
    }
    for note in &c.notes {
        let _ = writeln!(out, "note: {note}");
    }
    let _ = writeln!(
        out,
        "{} regression(s) beyond {}% in {} compared figures",
        c.regressions,
        c.regress_pct,
        c.deltas.len()
    );
    out
}

/// The comparison as one HTML page (`compare --html`): the table of
/// figures with regressions marked, and per paired stage the two runs'
/// percentile ladders and latency distributions on the same axes. Inline
/// SVG, no script, nothing fetched.
pub fn html(old: &RunSummary, new: &RunSummary, c: &Comparison) -> String {
    let mut out = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>loadtest compare</title>\
         <style>{STYLE}</style></head><body>\n<h1>{} (old) against {} (new)</h1>\n<p class=\"{}\">{} regression(s) at {}%</p>\n<ul>",
        escape(&old.run_id),
        escape(&new.run_id),
        if c.regressions > 0 { "bad" } else { "ok" },
        c.regressions,
        c.regress_pct
    );
    for note in &c.notes {
        let _ = write!(out, "<li>note: {}</li>", escape(note));
    }
    for one in &c.one_sided {
        let _ = write!(
            out,
            "<li>only in the {} run: stage {} ({}){}</li>",
            one.side,
            one.stage_index + 1,
            escape(&one.stage),
            one.scenario
                .as_deref()
                .map_or(String::new(), |s| format!(", scenario {}", escape(s)))
        );
    }
    out.push_str("</ul>\n<table><tr><th>stage</th><th>scenario</th><th>metric</th><th>old</th><th>new</th><th>change</th><th></th></tr>");
    for d in &c.deltas {
        let change = if d.old.abs() > f64::EPSILON {
            format!("{:+.1}%", 100.0 * (d.new - d.old) / d.old.abs())
        } else {
            "-".into()
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{change}</td><td{}>{}</td></tr>",
            escape(&d.stage),
            escape(&d.scenario),
            d.metric,
            d.old,
            d.new,
            if d.regression { " class=\"bad\"" } else { "" },
            if d.regression { "REGRESSION" } else { "ok" }
        );
    }
    out.push_str("</table>\n");
    for (a, b) in old
        .stages
        .iter()
        .zip(&new.stages)
        .filter(|(a, b)| a.label == b.label)
    {
        stage_charts(&mut out, a, b);
    }
    out.push_str("</body></html>\n");
    out
}

/// One paired stage's ladders and distributions, old beside new.
fn stage_charts(out: &mut String, old: &StageSummary, new: &StageSummary) {
    let _ = writeln!(
        out,
        "<h2>Stage {} {}</h2>",
        old.index + 1,
        escape(&old.label)
    );
    let mut ladder = Chart::new("Percentile ladder (all scenarios)", "percentile", "ms");
    ladder.y_scale = Scale::Log;
    ladder.x_names = LADDER.iter().map(|(_, n)| (*n).to_string()).collect();
    let mut distribution = Chart::new("Latency distribution", "percentile", "ms");
    distribution.x_scale = Scale::Log;
    distribution.y_scale = Scale::Log;
    distribution.x_format = nines_label;
    let rungs = |hist: &Hist| -> Vec<(f64, f64)> {
        LADDER
            .iter()
            .enumerate()
            .filter_map(|(i, (p, _))| hist.percentile_ms(*p).map(|v| (i as f64, v)))
            .collect()
    };
    for (side, stage) in [("old", old), ("new", new)] {
        let m = &stage.total.metrics;
        for (name, hist) in [("latency", &m.latency), ("TTFT", &m.ttft)] {
            let points = rungs(hist);
            if !points.is_empty() {
                ladder.series.push(Series {
                    name: format!("{side} {name}"),
                    points,
                });
            }
        }
        let curve = nines(&m.latency);
        if !curve.is_empty() {
            distribution.series.push(Series {
                name: format!("{side} latency"),
                points: curve,
            });
        }
    }
    out.push_str(&line_chart(&ladder));
    out.push_str(&line_chart(&distribution));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_html_comparison_draws_both_runs_and_fetches_nothing() {
        let (old, _) = crate::report::fixture::fixed();
        let mut new = old.clone();
        new.run_id = "the-new-run".into();
        for _ in 0..200 {
            new.stages[0].total.metrics.latency.record_us(500_000);
        }
        new.derive();
        let c = compare(&old, &new, 10.0).unwrap();
        let page = html(&old, &new, &c);
        assert!(page.contains("the-new-run (new)"), "{page}");
        assert!(page.contains("REGRESSION") && page.contains("class=\"bad\""));
        // Two charts per paired stage, each with both runs.
        assert_eq!(page.matches("<svg").count(), 2 * old.stages.len());
        assert!(page.contains(">old latency<") && page.contains(">new latency<"));
        for forbidden in ["<script", "<link", " src=", " href=", "url("] {
            assert!(!page.contains(forbidden), "{forbidden}");
        }
    }

    #[test]
    fn repeated_labels_pair_by_position_and_one_sided_parts_are_reported() {
        let (run, _) = crate::report::fixture::fixed();
        let mut old = run.clone();
        // Two stages with the same label, as `--stages 2:1s,2:1s` makes.
        old.stages[1] = old.stages[0].clone();
        old.stages[1].index = 1;
        old.stages[1].total.metrics.latency.record_us(5_000_000);
        let mut new = old.clone();
        new.stages[1].total.metrics = run.stages[0].total.metrics.clone();
        new.stages[1].scenarios.pop();
        new.stages.push(run.stages[1].clone());
        new.derive();
        old.derive();
        let c = compare(&old, &new, 10.0).unwrap();
        // Both stages are compared, each with its own counterpart.
        let indices: Vec<usize> = c.deltas.iter().map(|d| d.stage_index).collect();
        assert!(indices.contains(&0) && indices.contains(&1), "{indices:?}");
        let p99 = |i: usize| {
            c.deltas
                .iter()
                .find(|d| d.stage_index == i && d.scenario == "all" && d.metric == "latency_p99_ms")
                .unwrap()
        };
        assert_eq!(p99(0).old, p99(0).new);
        assert!(p99(1).old > p99(1).new);
        let text = table(&c);
        assert!(
            text.contains("only in the new run: stage 3 (@100:10s)"),
            "{text}"
        );
        assert!(
            text.contains("only in the old run: scenario lookup,\"x\" of stage 2 (4:10s)"),
            "{text}"
        );
        assert_eq!(c.one_sided.len(), 2);
    }
}
