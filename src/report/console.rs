//! What a run prints as it goes: the run header, one table row per
//! scenario and stage total as each stage ends, the open-loop line, and
//! the live progress line.

use super::{errors_text, ms, name_width, pct};
use crate::results::{PlanInfo, SeriesPoint, StageSummary, Stats, Window};
use crate::verdict;
use std::fmt::Write as _;

/// The run's header: what is being measured and how.
pub fn run_header(plan: &PlanInfo) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "loadtest {}: {} scenario{}, shards={} (CPUs {}, {} reactor), cache_mode={}, seed={}",
        env!("CARGO_PKG_VERSION"),
        plan.scenarios.len(),
        if plan.scenarios.len() == 1 { "" } else { "s" },
        plan.shards,
        crate::plan::format_cpus(&plan.cpus),
        plan.reactor,
        plan.cache_mode,
        plan.seed
    );
    let width = plan.label_width();
    for s in &plan.scenarios {
        let range = |min: String, max: String| {
            if min == max {
                min
            } else {
                format!("{min}-{max}")
            }
        };
        let secs = |s: f64| crate::stage::format_duration(std::time::Duration::from_secs_f64(s));
        let _ = writeln!(
            out,
            "  {:<width$} {:>5.1}%  {} {} model={} stream={} turns={} think={} content={} max_tokens={}",
            s.label(),
            s.share_pct,
            s.protocol,
            s.target,
            s.model,
            s.stream,
            range(s.turns.min.to_string(), s.turns.max.to_string()),
            range(secs(s.think_time_s.min), secs(s.think_time_s.max)),
            s.content.label(),
            s.max_tokens
        );
    }
    if let Some(tls) = &plan.tls {
        let _ = writeln!(
            out,
            "tls: {}, sessions {}",
            if tls.verify {
                format!("certificates verified against {} roots", tls.roots)
            } else {
                "certificates NOT verified (--insecure)".to_string()
            },
            if tls.resume {
                "resumed on reconnect"
            } else {
                "negotiated in full (--no-tls-resume)"
            }
        );
    }
    services_lines(&mut out, plan);
    let pacer = if plan.loop_mode() == "closed" {
        String::new()
    } else {
        format!(", pacer tick {}us", plan.pacer_tick_us)
    };
    let _ = write!(
        out,
        "stages {} ({} loop{pacer}), warm-up {} per stage excluded; latency/TTFT/ITL percentiles from HDR histograms, 3 significant digits, of successful requests",
        plan.stages.join(","),
        plan.loop_mode(),
        crate::stage::format_duration(std::time::Duration::from_secs_f64(plan.warmup_s))
    );
    out
}

/// The services of a comparison, and how they are compared.
fn services_lines(out: &mut String, plan: &PlanInfo) {
    if plan.services.is_empty() {
        return;
    }
    let names: Vec<&str> = plan.services.iter().map(|s| s.name.as_str()).collect();
    let _ = writeln!(
        out,
        "services {} in one window, each stage's load on each; baseline {}; {} round{}",
        names.join(", "),
        plan.baseline
            .as_deref()
            .unwrap_or("the fastest by TTFT p50 in each round"),
        plan.rounds,
        if plan.rounds == 1 { "" } else { "s" }
    );
}

/// Column widths of the console table, fitted to the plan's stage
/// labels and scenario names.
#[derive(Debug, Clone, Copy)]
pub struct Columns {
    stage: usize,
    scenario: usize,
}

impl Columns {
    /// Widths for `plan`.
    pub fn of(plan: &PlanInfo) -> Columns {
        Columns {
            // One more for the `*` of a stage stopped early.
            stage: name_width(plan.stages.iter().map(String::as_str)) + 1,
            scenario: plan.label_width(),
        }
    }

    /// The table's header line.
    pub fn header(&self) -> String {
        format!(
            "{:<sw$} {:<nw$} {:>9} {:>10} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>10}  errors",
            "stage",
            "scenario",
            "requests",
            "rps",
            "ok%",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "ttft p50",
            "ttft p95",
            "itl p50",
            "out tok/s",
            sw = self.stage,
            nw = self.scenario,
        )
    }

    /// Rows for a finished stage: one per scenario when there are several,
    /// then the stage total (`all`), then the open-loop line.
    pub fn rows(&self, stage: &StageSummary, max_inflight: u64) -> Vec<String> {
        let mut rows: Vec<String> = stage
            .rows()
            .into_iter()
            .map(|stats| self.row(stage, stats))
            .collect();
        if let Some(line) = open_loop_line(stage, max_inflight) {
            rows.push(line);
        }
        rows
    }

    fn row(&self, stage: &StageSummary, stats: &Stats) -> String {
        let m = &stats.metrics;
        let mut errors = errors_text(m, " ");
        if errors.is_empty() {
            errors.push_str("none");
        }
        if m.stale_retries > 0 {
            errors.push_str(&format!(" (retried {})", m.stale_retries));
        }
        let mut label = stage.label.clone();
        if stage.stopped_early {
            label.push('*');
        }
        format!(
            "{:<sw$} {:<nw$} {:>9} {:>10.1} {:>7.2} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>10.1}  {}",
            label,
            stats.label(),
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
            errors,
            sw = self.stage,
            nw = self.scenario,
        )
    }
}

/// The open-loop lines of a stage: target against achieved rate,
/// scheduler lag, dropped arrivals, and corrected next to uncorrected
/// percentiles; `None` for a closed-loop stage.
pub fn open_loop_line(stage: &StageSummary, max_inflight: u64) -> Option<String> {
    let open = stage.open_loop?;
    let m = &stage.total.metrics;
    let mut line = format!(
        "  open loop: target {:.1}/s achieved {:.1}/s ({:.2}%), scheduler lag p50 {} p99 {} max {} ms, dropped {} missed {} of {} arrivals (max_inflight {max_inflight}, peak in flight {})",
        open.target_rate,
        open.achieved_rate,
        open.achieved_pct,
        pct(&m.sched_lag, 50.0),
        pct(&m.sched_lag, 99.0),
        ms(m.sched_lag.max_ms()),
        m.dropped_arrivals,
        m.missed_arrivals,
        m.arrivals,
        m.inflight_peak
    );
    let _ = write!(
        line,
        "\n  latency from intended send (corrected) p50 {} p99 {} p99.9 {} ms; from actual send p50 {} p99 {} p99.9 {} ms",
        pct(&m.latency_corrected, 50.0),
        pct(&m.latency_corrected, 99.0),
        pct(&m.latency_corrected, 99.9),
        pct(&m.latency, 50.0),
        pct(&m.latency, 99.0),
        pct(&m.latency, 99.9)
    );
    if m.ttft_corrected.count() > 0 {
        let _ = write!(
            line,
            "\n  ttft corrected p50 {} p99 {} ms; uncorrected p50 {} p99 {} ms",
            pct(&m.ttft_corrected, 50.0),
            pct(&m.ttft_corrected, 99.0),
            pct(&m.ttft, 50.0),
            pct(&m.ttft, 99.0)
        );
    }
    if let Some(reason) = verdict::open_loop_flag(stage) {
        let _ = write!(line, "\n  FLAGGED: {reason}");
    }
    Some(line)
}

/// The live progress line for one second of stage `index` (0-based) of
/// `count`: the second's requests, percentiles and errors, requests in
/// flight, and in open loop the target against the arrivals sent in that
/// second and their scheduler lag.
pub fn progress_line(
    label: &str,
    (index, count): (usize, usize),
    stage: &crate::stage::Stage,
    point: &SeriesPoint,
    window: &Window,
) -> String {
    let mut line = format!(
        "stage {}/{count} {label} {}/{}s{}: {} req/s, p50 {} p99 {} ms, ttft p50 {} ms, errors {}, in flight {}",
        index + 1,
        point.second,
        stage.duration.as_secs(),
        if point.warmup { " (warm-up)" } else { "" },
        window.requests,
        pct(&window.latency, 50.0),
        pct(&window.latency, 99.0),
        pct(&window.ttft, 50.0),
        window.errors(),
        point.in_flight
    );
    if let crate::stage::Load::Open { rate, .. } = stage.load {
        let _ = write!(
            line,
            ", target {rate}/s sent {}/s lag p99 {} ms",
            window.arrivals_sent,
            pct(&window.sched_lag, 99.0)
        );
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::SecondWindow;

    #[test]
    fn progress_line_says_where_the_run_is() {
        let mut live = Window {
            requests: 990,
            arrivals_sent: 98,
            ..Window::default()
        };
        live.error_classes[crate::results::ErrorClass::Timeout as usize] = 3;
        live.latency.record_us(1_500);
        live.sched_lag.record_us(250);
        let point = SeriesPoint {
            second: 12,
            unix_s: 0,
            warmup: false,
            in_flight: 7,
            window: SecondWindow::pack(&live),
        };
        let open = crate::stage::parse_stages("@100:1m").unwrap().remove(0);
        assert_eq!(
            progress_line("@100:1m", (1, 2), &open, &point, &live),
            "stage 2/2 @100:1m 12/60s: 990 req/s, p50 1.50 p99 1.50 ms, ttft p50 - ms, errors 3, in flight 7, target 100/s sent 98/s lag p99 0.25 ms"
        );
        let closed = crate::stage::parse_stages("8:1m").unwrap().remove(0);
        let line = progress_line("8:1m", (0, 2), &closed, &point, &live);
        assert!(line.ends_with("errors 3, in flight 7"), "{line}");
    }

    #[test]
    fn columns_fit_long_scenario_names() {
        let (summary, _) = super::super::fixture::fixed();
        let mut plan = summary.plan.clone();
        plan.scenarios[0].name = "a-very-long-scenario-name-indeed".into();
        let columns = Columns::of(&plan);
        let mut stage = summary.stages[0].clone();
        stage.scenarios[0].name = plan.scenarios[0].name.clone();
        let header = columns.header();
        let rows = columns.rows(&stage, plan.max_inflight);
        let at = header.find("requests").unwrap();
        for row in &rows[..2] {
            // Every row's request count ends where the header's column does.
            let end = at + "requests".len();
            assert!(
                row[..end].ends_with(|c: char| c.is_ascii_digit()),
                "{row}\n{header}"
            );
            assert_eq!(row.as_bytes()[end], b' ', "{row}");
        }
    }
}
