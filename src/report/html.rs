//! `report-<id>.html`: the run drawn rather than tabulated, in one file
//! with no network fetch of any kind (inline SVG and a little inline CSS,
//! no script), so it opens offline years later. The run header and the
//! verdict; the run over time (throughput, errors, in flight, latency and
//! TTFT percentiles per second, stage boundaries marked, warm-up shaded);
//! per stage the table, a percentile ladder and the latency distribution;
//! the open-loop sweep with its knee; with services, each one's delta
//! against the baseline stage by stage; and the per-turn table.

use super::console::{open_loop_line, run_header};
use super::svg::{escape, line_chart, Chart, Scale, Series};
use super::text::turn_table;
use super::{errors_text, ms, pct, scenario_across_stages};
use crate::results::{
    from_unix_ms, rfc3339, Comparison, Hist, RunSummary, ServiceRow, StageSummary,
};
use crate::verdict::{knee_line, Verdict};
use std::fmt::Write as _;

/// The page style, shared by the run report and `compare --html`.
pub const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:980px;color:#222}\
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ccc}\
pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:12px}\
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{padding:2px 8px;text-align:right;border-bottom:1px solid #eee}\
td:first-child,th:first-child{text-align:left}.bad{color:#b00020;font-weight:600}.ok{color:#1b7f3b;font-weight:600}\
.chart{width:100%;height:auto;margin:8px 0}.chart .title{font-size:13px;font-weight:600}\
.chart .tick,.chart .legend,.chart .mark-label{font-size:10px}.chart .axis{font-size:11px}\
.frame{fill:none;stroke:#888}.grid{stroke:#eee}.shade{fill:#f1e8d0}.mark{stroke:#999;stroke-dasharray:3 3}.mark-label{fill:#555}\
.series{fill:none;stroke-width:1.6}.empty{color:#777;font-style:italic}";

/// The whole HTML report.
pub fn html_report(run: &RunSummary, verdict: &Verdict) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>loadtest {id}</title>\
         <style>{STYLE}</style></head><body>\n<h1>loadtest run {id}</h1>\n",
        id = escape(&run.run_id)
    );
    header_section(&mut out, run, verdict);
    timeline_section(&mut out, run);
    for stage in &run.stages {
        stage_section(&mut out, stage, run.plan.max_inflight);
        let compared = run
            .comparison
            .as_ref()
            .and_then(|c| c.stages.get(stage.index));
        if let Some(compared) = compared {
            let table = super::comparison::stage_table(compared);
            let _ = writeln!(out, "<pre>{}</pre>", escape(&table));
        }
    }
    if let Some(comparison) = &run.comparison {
        comparison_section(&mut out, comparison);
    }
    knee_section(&mut out, run, verdict);
    let turns = turn_table(run);
    if !turns.is_empty() {
        let _ = write!(
            out,
            "<h2>Per turn</h2>\n<p>All stages; prompt tokens from the server's usage.</p><pre>{}</pre>\n{}",
            escape(&turns),
            turn_charts(run)
        );
    }
    out.push_str("</body></html>\n");
    out
}

/// The plan, when it ran, how it ended and the verdict.
fn header_section(out: &mut String, run: &RunSummary, verdict: &Verdict) {
    let mut header = run_header(&run.plan);
    let _ = writeln!(
        header,
        "started {}",
        rfc3339(from_unix_ms(run.started_unix_ms))
    );
    if !run.merged_from.is_empty() {
        let _ = writeln!(
            header,
            "merged from {} hosts: {}",
            run.hosts.len(),
            run.merged_from.join(", ")
        );
    }
    let _ = write!(
        out,
        "<pre>{}</pre>\n<h2>Verdict</h2>\n<ul>",
        escape(&header)
    );
    if let Some(stop) = &run.stop {
        let _ = write!(
            out,
            "<li class=\"bad\">run ended early: {}</li>",
            escape(&stop.describe())
        );
    }
    let g = &verdict.generator;
    if g.valid {
        out.push_str("<li class=\"ok\">valid: the generator was not the bottleneck</li>");
    }
    for reason in &g.invalid_reasons {
        let _ = write!(out, "<li class=\"bad\">INVALID: {}</li>", escape(reason));
    }
    for caution in &g.cautions {
        let _ = write!(out, "<li>caution: {}</li>", escape(caution));
    }
    if !verdict.thresholds.is_empty() {
        let failed: Vec<_> = verdict.thresholds.iter().filter(|c| !c.pass).collect();
        let class = if failed.is_empty() { "ok" } else { "bad" };
        let _ = write!(
            out,
            "<li class=\"{class}\">thresholds: {} of {} checks failed</li>",
            failed.len(),
            verdict.thresholds.len()
        );
        for check in failed {
            let _ = write!(
                out,
                "<li class=\"bad\">{} {}: {}</li>",
                escape(&check.stage),
                escape(&check.scenario),
                escape(&check.failures.join("; "))
            );
        }
    }
    for failure in &verdict.no_success {
        let _ = write!(out, "<li class=\"bad\">{}</li>", escape(failure));
    }
    for flag in &verdict.fairness {
        let _ = write!(
            out,
            "<li class=\"bad\">comparison unfair: {}</li>",
            escape(flag)
        );
    }
    if let Some(knee) = &verdict.knee {
        let _ = write!(out, "<li>{}</li>", escape(&knee_line(knee)));
    }
    out.push_str("</ul>\n");
}

/// Seconds since the run started at the end of a stage's `second`.
fn at(run: &RunSummary, stage: &StageSummary, second: u32) -> f64 {
    stage.started_unix_ms.saturating_sub(run.started_unix_ms) as f64 / 1000.0 + f64::from(second)
}

/// The run second by second: throughput and latency, stage boundaries
/// marked and warm-up shaded.
fn timeline_section(out: &mut String, run: &RunSummary) {
    let mut rate = Chart::new("Throughput per second", "seconds since start", "per second");
    let mut latency = Chart::new("Latency and TTFT per second", "seconds since start", "ms");
    latency.y_scale = Scale::Log;
    let mut series: [Vec<(f64, f64)>; 7] = Default::default();
    for stage in &run.stages {
        let start = at(run, stage, 0);
        rate.marks.push((start, stage.label.clone()));
        latency.marks.push((start, stage.label.clone()));
        if run.plan.warmup_s > 0.0 {
            let shade = (start, start + run.plan.warmup_s.min(stage.duration_s));
            rate.shades.push(shade);
            latency.shades.push(shade);
        }
        for point in &stage.series {
            let t = at(run, stage, point.second);
            let (lat, ttft) = (point.window.latency.unpack(), point.window.ttft.unpack());
            series[0].push((t, point.window.requests as f64));
            series[1].push((t, point.window.errors as f64));
            series[2].push((t, point.in_flight as f64));
            for (i, (hist, p)) in [(&lat, 50.0), (&lat, 99.0), (&ttft, 50.0), (&ttft, 99.0)]
                .iter()
                .enumerate()
            {
                if let Some(v) = hist.percentile_ms(*p) {
                    series[3 + i].push((t, v));
                }
            }
        }
    }
    let names = [
        "requests/s",
        "errors/s",
        "in flight",
        "latency p50",
        "latency p99",
        "TTFT p50",
        "TTFT p99",
    ];
    for (i, (name, points)) in names.iter().zip(series).enumerate() {
        let chart = if i < 3 { &mut rate } else { &mut latency };
        if !points.is_empty() {
            chart.series.push(Series {
                name: (*name).into(),
                points,
            });
        }
    }
    let _ = write!(
        out,
        "<h2>Over time</h2>\n<p>Each point is one second of finished requests; warm-up is shaded.</p>\n{}{}",
        line_chart(&rate),
        line_chart(&latency)
    );
}

/// Percentiles drawn on a ladder.
pub const LADDER: [(f64, &str); 5] = [
    (50.0, "p50"),
    (90.0, "p90"),
    (95.0, "p95"),
    (99.0, "p99"),
    (99.9, "p99.9"),
];

/// One stage: its table, then its charts.
fn stage_section(out: &mut String, stage: &StageSummary, max_inflight: u64) {
    let _ = write!(
        out,
        "<h2>Stage {} {}{}</h2>\n<p>measured {:.1} s</p>\n<table><tr><th>scenario</th><th>requests</th><th>rps</th><th>ok %</th>\
         <th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>TTFT p50</th><th>TTFT p95</th><th>ITL p50</th><th>out tok/s</th><th>errors</th></tr>",
        stage.index + 1,
        escape(&stage.label),
        if stage.stopped_early { " (stopped early)" } else { "" },
        stage.measured_s
    );
    for stats in stage.rows() {
        let m = &stats.metrics;
        let errors = errors_text(m, " ");
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td></tr>",
            escape(&stats.label()),
            m.requests,
            stats.rates.rps,
            stats.rates.ok_pct,
            pct(&m.latency, 50.0),
            pct(&m.latency, 95.0),
            pct(&m.latency, 99.0),
            pct(&m.ttft, 50.0),
            pct(&m.ttft, 95.0),
            pct(&m.itl, 50.0),
            stats.rates.output_tokens_per_s,
            escape(if errors.is_empty() { "none" } else { &errors })
        );
    }
    out.push_str("</table>\n");
    if let Some(line) = open_loop_line(stage, max_inflight) {
        let _ = writeln!(out, "<pre>{}</pre>", escape(line.trim_start()));
    }
    stage_charts(out, stage);
}

/// A stage's percentile ladder and latency distribution.
fn stage_charts(out: &mut String, stage: &StageSummary) {
    let m = &stage.total.metrics;
    let mut ladder = Chart::new("Percentile ladder (all scenarios)", "percentile", "ms");
    ladder.y_scale = Scale::Log;
    ladder.x_names = LADDER.iter().map(|(_, n)| (*n).to_string()).collect();
    let mut distribution = Chart::new("Latency distribution", "percentile", "ms");
    distribution.x_scale = Scale::Log;
    distribution.x_format = nines_label;
    distribution.y_scale = Scale::Log;
    for (name, hist) in [
        ("latency", &m.latency),
        ("TTFT", &m.ttft),
        ("ITL", &m.itl),
        ("corrected latency", &m.latency_corrected),
    ] {
        let points: Vec<(f64, f64)> = LADDER
            .iter()
            .enumerate()
            .filter_map(|(i, (p, _))| hist.percentile_ms(*p).map(|v| (i as f64, v)))
            .collect();
        if !points.is_empty() {
            ladder.series.push(Series {
                name: name.into(),
                points,
            });
        }
        if name == "latency" || name == "corrected latency" {
            let curve = nines(hist);
            if !curve.is_empty() {
                distribution.series.push(Series {
                    name: name.into(),
                    points: curve,
                });
            }
        }
    }
    out.push_str(&line_chart(&ladder));
    out.push_str(&line_chart(&distribution));
}

/// The latency at each percentile, with x = 1 / (1 − p): the usual way to
/// draw an HDR histogram, where each nine takes the same width (x = 2 is
/// the median, 100 the p99, 1,000 the p99.9).
pub fn nines(hist: &Hist) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for step in 0..=40 {
        let nines = f64::from(step) / 10.0; // 0 to 4 nines
        let p = 100.0 * (1.0 - 10f64.powf(-nines));
        if let Some(v) = hist.percentile_ms(p) {
            out.push((10f64.powf(nines), v));
        }
    }
    out
}

/// The percentile at x = 1 / (1 − p): 1 is 0 %, 10 is 90 %, 100 is 99 %.
pub fn nines_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 1.0 / x);
    if p == p.round() {
        format!("{p:.0}%")
    } else {
        format!("{}%", (p * 1000.0).round() / 1000.0)
    }
}

/// The open-loop stages as a table: offered against achieved, errors,
/// lag, missed and dropped arrivals.
fn sweep_table(out: &mut String, open: &[&StageSummary]) {
    out.push_str("<table><tr><th>stage</th><th>target/s</th><th>achieved/s</th><th>achieved %</th><th>error rate</th><th>lag p99 ms</th><th>missed</th><th>dropped</th></tr>");
    for s in open {
        let m = &s.total.metrics;
        let o = s.open_loop.unwrap_or_default();
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.2}</td><td>{:.4}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&s.label),
            o.target_rate,
            o.achieved_rate,
            o.achieved_pct,
            s.total.rates.error_rate,
            ms(m.sched_lag.percentile_ms(99.0)),
            m.missed_arrivals,
            m.dropped_arrivals
        );
    }
    out.push_str("</table>\n");
}

/// Mean prompt tokens and mean latency per turn of each multi-turn
/// scenario: the context growing turn by turn, and what it costs.
fn turn_charts(run: &RunSummary) -> String {
    let mut prompt = Chart::new("Prompt tokens per turn", "turn", "mean prompt tokens");
    let mut latency = Chart::new("Latency per turn", "turn", "mean latency ms");
    for (i, scenario) in run.plan.scenarios.iter().enumerate() {
        if scenario.turns.max == 1 {
            continue;
        }
        let rows = scenario_across_stages(run, i).turn_rows();
        let points = |f: &dyn Fn(&crate::results::TurnRow) -> Option<f64>| -> Vec<(f64, f64)> {
            rows.iter()
                .filter_map(|(turn, row)| Some((*turn as f64, f(row)?)))
                .collect()
        };
        prompt.series.push(Series {
            name: scenario.name.clone(),
            points: points(&|r| r.mean_prompt_tokens()),
        });
        latency.series.push(Series {
            name: scenario.name.clone(),
            points: points(&|r| r.mean_latency_ms()),
        });
    }
    line_chart(&prompt) + &line_chart(&latency)
}

/// The open-loop sweep: corrected and uncorrected p99 and the achieved
/// rate against the target, the knee marked.
/// The services of a comparison: each one's delta against the baseline,
/// stage by stage as run, and the tables over all rounds.
fn comparison_section(out: &mut String, comparison: &Comparison) {
    let streamed = comparison.stages.iter().any(|s| s.streamed);
    let (figure, pick): (&str, fn(&ServiceRow) -> Option<f64>) = if streamed {
        ("TTFT p50", |r| r.ttft_ms_p50_delta)
    } else {
        ("latency p50", |r| r.latency_ms_p50_delta)
    };
    let mut chart = Chart::new(
        &format!("{figure} minus the baseline's, stage by stage"),
        "stage (round)",
        "ms",
    );
    chart.x_names = comparison
        .stages
        .iter()
        .map(|s| format!("{} r{}", s.index + 1, s.round.unwrap_or(0)))
        .collect();
    let names = comparison.stages.first().map_or(Vec::new(), |s| {
        s.services.iter().map(|r| r.service.clone()).collect()
    });
    for (k, name) in names.iter().enumerate() {
        let points = comparison
            .stages
            .iter()
            .enumerate()
            .filter_map(|(x, s)| Some((x as f64, pick(s.services.get(k)?)?)))
            .collect();
        chart.series.push(Series {
            name: name.clone(),
            points,
        });
    }
    let _ = writeln!(
        out,
        "<h2>Services</h2>\n<p>Every service ran in the same window; a delta is its percentile minus the baseline's ({}).</p>\n{}",
        escape(comparison.baseline.as_deref().unwrap_or("the fastest in each stage and round")),
        line_chart(&chart)
    );
    let overall = super::comparison::overall_tables(comparison);
    if !overall.is_empty() {
        let _ = writeln!(
            out,
            "<h3>Over all {} rounds</h3>\n<pre>{}</pre>",
            comparison.rounds,
            escape(&overall)
        );
    }
}

fn knee_section(out: &mut String, run: &RunSummary, verdict: &Verdict) {
    let open: Vec<&StageSummary> = run.stages.iter().filter(|s| s.is_open()).collect();
    if open.is_empty() {
        return;
    }
    let mut chart = Chart::new(
        "Open-loop sweep: p99 against the target rate",
        "target arrivals/s",
        "ms",
    );
    chart.y_scale = Scale::Log;
    let points = |f: &dyn Fn(&StageSummary) -> Option<f64>| -> Vec<(f64, f64)> {
        open.iter()
            .filter_map(|s| Some((s.target_rate()?, f(s)?)))
            .collect()
    };
    for (name, points) in [
        (
            "corrected p99",
            points(&|s| s.total.metrics.latency_corrected.percentile_ms(99.0)),
        ),
        (
            "uncorrected p99",
            points(&|s| s.total.metrics.latency.percentile_ms(99.0)),
        ),
        (
            "scheduler lag p99",
            points(&|s| s.total.metrics.sched_lag.percentile_ms(99.0)),
        ),
    ] {
        chart.series.push(Series {
            name: name.into(),
            points,
        });
    }
    let mut errors = Chart::new(
        "Open-loop sweep: errors against the target rate",
        "target arrivals/s",
        "error rate %",
    );
    errors.series.push(Series {
        name: "error rate".into(),
        points: points(&|s| Some(100.0 * s.total.rates.error_rate)),
    });
    let knee = verdict.knee.as_ref();
    if let Some(k) = knee.and_then(|k| k.highest_ok.as_ref()) {
        chart.marks.push((k.rate, format!("knee {}", k.stage)));
        errors.marks.push((k.rate, format!("knee {}", k.stage)));
    }
    let _ = write!(
        out,
        "<h2>Open loop</h2>\n{}{}",
        line_chart(&chart),
        line_chart(&errors)
    );
    sweep_table(out, &open);
    if let Some(k) = knee {
        let _ = writeln!(out, "<p>{}</p>", escape(&knee_line(k)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_matches_the_golden_file_and_fetches_nothing() {
        let (run, verdict) = super::super::fixture::fixed();
        let html = html_report(&run, &verdict);
        super::super::fixture::golden("report.html", &html);
        // Nothing is fetched: no script, no link, no source or reference
        // to another document, no URL but the masked target in the text.
        for forbidden in ["<script", "<link", " src=", " href=", "url(", "@import"] {
            assert!(!html.contains(forbidden), "{forbidden} in the report");
        }
        // Charts: two over time, two per stage, two for the sweep, two
        // per turn.
        assert_eq!(
            html.matches("<svg").count(),
            2 + 2 * run.stages.len() + 2 + 2
        );
        assert!(html.contains("<h2>Open loop</h2>") && html.contains("knee"));
        assert!(html.contains("<polyline"));
        assert_eq!(nines_label(1.0), "0%");
        assert_eq!(nines_label(100.0), "99%");
        assert_eq!(nines_label(10_000.0), "99.99%");
    }
}
