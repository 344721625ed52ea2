//! The services of a comparison side by side: one table per stage (each
//! round's), and one per profile stage over all rounds with the spread of
//! the per-round deltas. Rendered from `results::Comparison`; the console
//! and `report-<id>.txt` print the same tables.

use crate::results::{Comparison, ServiceRow, StageComparison};
use std::fmt::Write as _;

/// A stage's (or a pooled stage's) table, headed by what it compares.
pub fn stage_table(stage: &StageComparison) -> String {
    let mut out = String::new();
    let against = match &stage.baseline {
        Some(name) => format!("deltas against {name}"),
        None => "no service succeeded, no deltas".to_string(),
    };
    let when = match stage.round {
        Some(round) => format!("stage {} {} round {round}", stage.index + 1, stage.stage),
        None => format!("stage {} over all rounds", stage.stage),
    };
    let what = if stage.streamed {
        ""
    } else {
        " (not streamed: latency only)"
    };
    let _ = writeln!(out, "services, {when}: {against}{what}");
    let width = stage
        .services
        .iter()
        .map(|r| r.service.chars().count())
        .max()
        .unwrap_or(0)
        .max(10);
    let spread = stage.round.is_none();
    let delta_width = if spread { 21 } else { 10 };
    let _ = writeln!(
        out,
        "  {:<width$} {:>9} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>dw$} {:>dw$} {:>dw$} {:>dw$} {:>7}",
        "service",
        "requests",
        "rps",
        "ok%",
        "ttft p50",
        "ttft p95",
        "lat p50",
        "lat p95",
        "Δttft p50",
        "Δttft p95",
        "Δlat p50",
        "Δlat p95",
        "errors",
        dw = delta_width,
    );
    for row in &stage.services {
        let is_base = stage.baseline.as_deref() == Some(row.service.as_str());
        let _ = writeln!(out, "  {}", service_line(row, width, delta_width, is_base));
    }
    out
}

/// One service's row.
fn service_line(row: &ServiceRow, width: usize, delta_width: usize, is_base: bool) -> String {
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    let ranges = row.spread.as_ref().map(|s| s.ranges()).unwrap_or_default();
    let deltas: Vec<String> = row
        .deltas()
        .iter()
        .zip(&ranges)
        .map(|(delta, range)| match (is_base, delta) {
            (true, Some(_)) => "base".to_string(),
            (_, None) => "-".to_string(),
            (false, Some(d)) => match range {
                Some(r) => format!("{d:+.2} ({:+.1}..{:+.1})", r.min, r.max),
                None => format!("{d:+.2}"),
            },
        })
        .collect();
    format!(
        "{:<width$} {:>9} {:>9.1} {:>7.2} {:>9} {:>9} {:>9} {:>9} {:>dw$} {:>dw$} {:>dw$} {:>dw$} {:>7}",
        row.service,
        row.requests,
        row.rps,
        row.ok_pct,
        ms(row.ttft_ms_p50),
        ms(row.ttft_ms_p95),
        ms(row.latency_ms_p50),
        ms(row.latency_ms_p95),
        deltas[0],
        deltas[1],
        deltas[2],
        deltas[3],
        row.errors,
        dw = delta_width,
    )
}

/// The tables over all rounds (only when there were several), each delta
/// followed by its per-round range.
pub fn overall_tables(comparison: &Comparison) -> String {
    if comparison.rounds < 2 {
        return String::new();
    }
    comparison
        .overall
        .iter()
        .map(stage_table)
        .collect::<Vec<_>>()
        .join("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{Range, Spread};

    fn row(name: &str, ttft: f64, delta: Option<f64>) -> ServiceRow {
        ServiceRow {
            service: name.into(),
            requests: 100,
            rps: 10.0,
            ok_pct: 100.0,
            ttft_ms_p50: Some(ttft),
            ttft_ms_p50_delta: delta,
            latency_ms_p50: Some(ttft + 8.0),
            latency_ms_p50_delta: delta,
            ..ServiceRow::default()
        }
    }

    #[test]
    fn the_baseline_reads_base_and_the_others_their_signed_delta() {
        let stage = StageComparison {
            stage: "4:3s".into(),
            index: 0,
            round: Some(2),
            baseline: Some("direct".into()),
            streamed: true,
            services: vec![row("direct", 20.0, Some(0.0)), row("gw", 50.0, Some(30.0))],
        };
        let text = stage_table(&stage);
        assert!(text.starts_with("services, stage 1 4:3s round 2: deltas against direct\n"));
        let direct = text
            .lines()
            .find(|l| l.trim_start().starts_with("direct"))
            .unwrap();
        assert!(direct.contains("base"), "{direct}");
        let gw = text
            .lines()
            .find(|l| l.trim_start().starts_with("gw"))
            .unwrap();
        assert!(gw.contains("+30.00"), "{gw}");
    }

    #[test]
    fn over_all_rounds_each_delta_shows_its_range() {
        let mut gw = row("gw", 50.0, Some(30.0));
        gw.spread = Some(Spread {
            ttft_ms_p50_delta: Some(Range {
                min: 29.5,
                max: 30.4,
            }),
            ..Spread::default()
        });
        let stage = StageComparison {
            stage: "4:3s".into(),
            round: None,
            baseline: Some("direct".into()),
            streamed: true,
            services: vec![row("direct", 20.0, Some(0.0)), gw],
            ..StageComparison::default()
        };
        let comparison = Comparison {
            rounds: 3,
            overall: vec![stage],
            ..Comparison::default()
        };
        let text = overall_tables(&comparison);
        assert!(text.contains("over all rounds"), "{text}");
        assert!(text.contains("+30.00 (+29.5..+30.4)"), "{text}");
        let single = Comparison {
            rounds: 1,
            ..comparison
        };
        assert!(overall_tables(&single).is_empty());
    }
}
