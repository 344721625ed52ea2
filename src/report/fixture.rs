//! A fixed run for the report tests: a closed stage and an open stage of
//! two scenarios, with known latencies, statuses and errors.

use crate::results::{
    ErrorClass, Host, PlanInfo, RunResult, RunSummary, SecondWindow, SeriesPoint, StageMetrics,
    StageSummary, Stats, Window,
};
use crate::verdict::{self, Verdict};
use std::time::{Duration, SystemTime};

/// The run and its verdict.
pub fn fixed() -> (RunSummary, Verdict) {
    let profile = crate::config::parse(
        r#"{"defaults":{"target":"http://127.0.0.1:1","model":"m"},"stages":"4:10s,@100:10s",
            "warmup":"1s","seed":7,"thresholds":{"p99_ms":50,"error_rate":0.02},
            "scenarios":[{"name":"chat","weight":3,"turns":2,"stream":true},{"name":"lookup,\"x\"","weight":1}]}"#,
    )
    .unwrap();
    let plan = crate::plan::build(&profile, &Default::default(), vec![0]).unwrap();
    let stages = plan
        .stages
        .iter()
        .enumerate()
        .map(|(index, stage)| fixed_stage(index, stage, &plan))
        .collect();
    let started_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_305_600);
    let run = RunResult {
        stages,
        started_at,
        stop: None,
    };
    let host = Host {
        run_id: "fixed".into(),
        fd_limit: 20_000,
        sink_dropped: 0,
        jsonl_lines: 618,
        results_file: Some("runs/results-fixed.jsonl".into()),
        local_port_range: Some((32768, 60999)),
    };
    let mut info = PlanInfo::of(&plan);
    // Whatever reactor this host picks, the golden files name one.
    info.reactor = "io_uring".to_string();
    let summary = RunSummary::new(info, run, host);
    let verdict = verdict::judge(&summary);
    (summary, verdict)
}

fn fixed_stage(
    index: usize,
    stage: &crate::stage::Stage,
    plan: &crate::plan::Plan,
) -> StageSummary {
    let mut scenarios = Vec::new();
    for (i, scenario) in plan.scenarios.iter().enumerate() {
        let mut m = StageMetrics::new();
        for k in 0..100u64 {
            m.requests += 1;
            m.count_status(200);
            m.ok += 1;
            m.latency.record_us(1_000 * (k + 1) + 500 * i as u64);
            if i == 0 {
                m.ttft.record_us(200 * (k + 1));
                m.itl.record_us(20 + k);
            }
            let row = m.turn_row(k % 2);
            row.requests += 1;
            row.ok += 1;
            row.prompt_samples += 1;
            row.prompt_tokens += 100 + 300 * (k % 2);
            row.latency_us += 1_000 * (k + 1);
            if stage.is_open() {
                m.latency_corrected.record_us(1_200 * (k + 1));
                m.sched_lag.record_us(50 + k);
            }
        }
        m.requests += 3;
        m.count_status(503);
        m.count_error(ErrorClass::Http5xx);
        m.count_status(503);
        m.count_error(ErrorClass::Http5xx);
        m.count_error(ErrorClass::Timeout);
        m.prompt_tokens = 25_000;
        m.completion_tokens = 6_400;
        m.conversations_started = 52;
        if stage.is_open() {
            m.arrivals = 52;
            m.arrivals_sent = 52;
        }
        scenarios.push(Stats::new(scenario.name.clone(), m));
    }
    let mut total = StageMetrics::new();
    for s in &scenarios {
        total.merge(&s.metrics);
    }
    total.connections_open = 4;
    StageSummary {
        index,
        label: stage.label(),
        load: stage.load,
        duration_s: stage.duration.as_secs_f64(),
        started_unix_ms: 1_795_305_600_000 + 10_000 * index as u64,
        round: 1,
        measured_s: 9.0,
        elapsed_s: 10.0,
        stopped_early: false,
        shard_cpu_s: vec![2.5],
        shard_busy_pct: vec![25.0],
        shard_wait_pct: vec![0.5],
        shard_wait_per_run_ms: vec![0.002],
        steal_pct: Some(0.0),
        connections_open: vec![4],
        requests_by_address: [("127.0.0.1:1".to_string(), 8)].into(),
        open_loop: None,
        total: Stats::new("all", total),
        scenarios,
        services: Vec::new(),
        series: (1..=3).map(|second| point(second, index)).collect(),
    }
}

/// Second `second` of stage `index`: a few requests, one failed in the
/// first (warm-up) second.
fn point(second: u32, index: usize) -> SeriesPoint {
    let mut window = Window::default();
    for k in 0..u64::from(second) * 5 {
        window.requests += 1;
        window
            .latency
            .record_us(900 + 200 * k + 1_000 * index as u64);
        window.ttft.record_us(300 + 50 * k);
    }
    if second == 1 {
        window.requests += 1;
        window.error_classes[crate::results::ErrorClass::Http5xx as usize] += 1;
    }
    SeriesPoint {
        second,
        unix_s: 1_795_305_600 + 10 * index as u64 + u64::from(second),
        warmup: second == 1,
        in_flight: u64::from(second) + 1,
        window: SecondWindow::pack(&window),
    }
}

/// Compares with `tests/golden/NAME`; `UPDATE_GOLDEN=1` rewrites it.
pub fn golden(name: &str, actual: &str) {
    let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == actual,
        "{name} differs from {path} (UPDATE_GOLDEN=1 rewrites it):\n{actual}"
    );
}
