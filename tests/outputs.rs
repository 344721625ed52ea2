//! Summaries after the run: merging several hosts' summaries exactly,
//! comparing two runs with a CI exit code, and output files that never
//! collide.

mod common;

use loadtest::engine::{self, RunResult};
use loadtest::mock::MockServer;
use loadtest::plan::{self, Overrides, Plan};
use loadtest::results::{self, Host, PlanInfo, RunSummary, StageMetrics};
use loadtest::{config, verdict};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn start_mock() -> MockServer {
    common::start_mock(|c| c.tokens = Some(6))
}

fn plan(mock: &MockServer) -> Plan {
    let profile = config::parse(
        r#"{"stages":"2:300ms,@200:300ms","defaults":{"stream":true},
            "scenarios":[{"name":"a","weight":1},{"name":"b","weight":1,"turns":2}]}"#,
    )
    .unwrap();
    let overrides = Overrides {
        target: Some(format!("http://{}", mock.addr())),
        ..Overrides::default()
    };
    plan::build(
        &profile,
        &overrides,
        vec![loadtest::host::allowed_cpus()[0]],
    )
    .unwrap()
}

fn summary(plan: &Plan, result: RunResult, run_id: &str) -> RunSummary {
    let host = Host {
        run_id: run_id.into(),
        local_port_range: Some((32768, 60999)),
        ..Host::default()
    };
    RunSummary::new(PlanInfo::of(plan), result, host)
}

/// Two "hosts": the same plan run twice at the same time.
fn two_hosts() -> (Plan, RunSummary, RunSummary) {
    let mock = start_mock();
    let plan = plan(&mock);
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| engine::run(&plan, |_| {}).unwrap());
        let b = s.spawn(|| engine::run(&plan, |_| {}).unwrap());
        (a.join().unwrap(), b.join().unwrap())
    });
    mock.stop().expect("the mock shut down cleanly");
    let (a, b) = (summary(&plan, a, "host-a"), summary(&plan, b, "host-b"));
    (plan, a, b)
}

#[test]
fn two_hosts_merge_into_one_exact_summary() {
    let (_, a, b) = two_hosts();
    let merged = results::merge(vec![
        ("a.json".into(), a.clone()),
        ("b.json".into(), b.clone()),
    ])
    .unwrap();
    assert_eq!(merged.hosts.len(), 2);
    assert_eq!(merged.merged_from, ["a.json", "b.json"]);
    for (index, stage) in merged.stages.iter().enumerate() {
        let (sa, sb) = (&a.stages[index], &b.stages[index]);
        // What one generator would have measured had it done both halves.
        let mut whole = StageMetrics::new();
        whole.merge(&sa.total.metrics);
        whole.merge(&sb.total.metrics);
        let m = &stage.total.metrics;
        assert_eq!(m, &whole, "stage {index}: every counter and histogram");
        assert_eq!(
            m.requests,
            sa.total.metrics.requests + sb.total.metrics.requests
        );
        assert_eq!(m.completion_tokens, whole.completion_tokens);
        assert_eq!(m.error_counts(), whole.error_counts());
        for p in [50.0, 90.0, 99.0, 99.9, 100.0] {
            assert_eq!(m.latency.percentile_ms(p), whole.latency.percentile_ms(p));
            assert_eq!(m.ttft.percentile_ms(p), whole.ttft.percentile_ms(p));
        }
        // Per-second buckets add on the wall-clock second.
        let bucket_sum =
            |s: &results::StageSummary| -> u64 { s.series.iter().map(|p| p.window.requests).sum() };
        assert_eq!(bucket_sum(stage), bucket_sum(sa) + bucket_sum(sb));
        for point in &stage.series {
            let of = |s: &results::StageSummary| {
                s.series
                    .iter()
                    .filter(|p| p.unix_s == point.unix_s)
                    .map(|p| p.window.requests)
                    .sum::<u64>()
            };
            assert_eq!(
                point.window.requests,
                of(sa) + of(sb),
                "second {}",
                point.unix_s
            );
        }
        // Scenarios merge too.
        for (i, scenario) in stage.scenarios.iter().enumerate() {
            let n = sa.scenarios[i].metrics.requests + sb.scenarios[i].metrics.requests;
            assert_eq!(scenario.metrics.requests, n);
        }
        assert_eq!(stage.shard_cpu_s.len(), 2);
        assert_eq!(stage.connections_open.len(), 2);
    }
    assert_eq!(merged.stages[1].target_rate(), Some(400.0));
    // The merged run is judged by the same rules, on the merged figures
    // (400/s, not one host's 200/s).
    let knee = verdict::knee(&merged).unwrap();
    match knee.highest_ok {
        Some(k) => assert_eq!(k.rate, 400.0),
        None => assert_eq!(knee.first_broken.unwrap().stage, "@200:300ms"),
    }
    // Written and read back, the merged summary is the same value.
    let text = loadtest::report::summary::summary_json(&merged, &verdict::judge(&merged));
    assert_eq!(RunSummary::parse(&text).unwrap(), merged);
}

#[test]
fn merge_refuses_what_is_not_one_run() {
    let (_, a, b) = two_hosts();
    let merge = |x: &RunSummary, y: &RunSummary| {
        results::merge(vec![
            ("a.json".into(), x.clone()),
            ("b.json".into(), y.clone()),
        ])
        .unwrap_err()
    };
    let err = merge(&a, &a);
    assert!(
        err.contains("b.json: run host-a is already in the merge"),
        "{err}"
    );
    let mut late = b.clone();
    for stage in &mut late.stages {
        stage.started_unix_ms += 60_000;
    }
    let err = merge(&a, &late);
    assert!(
        err.contains("b.json: stage 1") && err.contains("apart"),
        "{err}"
    );
    let mut other = b.clone();
    other.stages[0].label = "9:9s".into();
    let err = merge(&a, &other);
    assert!(
        err.contains("b.json: stages") && err.contains("do not line up"),
        "{err}"
    );
    let mut renamed = b;
    renamed.plan.scenarios[1].name = "c".into();
    let err = merge(&a, &renamed);
    assert!(err.contains("b.json: scenarios"), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_loadtest"))
}

fn write(dir: &Path, name: &str, summary: &RunSummary) -> PathBuf {
    let path = dir.join(name);
    let text = loadtest::report::summary::summary_json(summary, &verdict::judge(summary));
    std::fs::write(&path, text).unwrap();
    path
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loadtest-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn compare_and_merge_on_the_command_line() {
    let (_, a, b) = two_hosts();
    let dir = temp_dir("outputs");
    let old = write(&dir, "old.json", &a);
    // Same run against itself: no regression, exit 0.
    let out = bin().arg("compare").arg(&old).arg(&old).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("0 regression(s)"), "{text}");
    // Half the throughput and a much slower tail: regressions, exit 1.
    let mut worse = a.clone();
    worse.stages[0].measured_s *= 2.0;
    for _ in 0..worse.stages[0].total.metrics.latency.count() {
        worse.stages[0].total.metrics.latency.record_us(10_000_000);
    }
    worse.derive();
    let new = write(&dir, "new.json", &worse);
    let json = dir.join("comparison.json");
    let page = dir.join("comparison.html");
    let out = bin()
        .arg("compare")
        .arg(&old)
        .arg(&new)
        .arg("--json")
        .arg(&json)
        .arg("--html")
        .arg(&page)
        .output()
        .unwrap();
    let drawn = std::fs::read_to_string(&page).unwrap();
    assert!(
        drawn.contains("<svg") && drawn.contains("REGRESSION"),
        "{drawn}"
    );
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("latency_p99_ms") && text.contains("REGRESSION"),
        "{text}"
    );
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(written["regressions"].as_u64().unwrap() >= 2);
    // The seed tool's spelling, with a threshold the change stays under.
    let both = format!("{},{}", old.display(), old.display());
    let out = bin()
        .args(["-compare", &both, "-regress-pct", "150"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Unreadable input is a usage error.
    let out = bin()
        .arg("compare")
        .arg(&old)
        .arg(dir.join("missing.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // Merge of the two hosts: counts add; the same file twice is refused.
    let merge = |x: &Path, y: &Path, to: &Path| {
        bin()
            .arg("merge")
            .arg(x)
            .arg(y)
            .arg("-o")
            .arg(to)
            .output()
            .unwrap()
    };
    let second = write(&dir, "b.json", &b);
    let merged = dir.join("merged.json");
    let out = merge(&old, &second, &merged);
    let exit = verdict::judge(
        &results::merge(vec![("x".into(), a.clone()), ("y".into(), b.clone())]).unwrap(),
    )
    .exit;
    assert_eq!(
        out.status.code(),
        Some(i32::from(exit.code())),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = RunSummary::read(&merged).unwrap();
    assert_eq!(
        m.stages[0].total.metrics.requests,
        a.stages[0].total.metrics.requests + b.stages[0].total.metrics.requests
    );
    // The merged summary renders like a run's, from the same model.
    let text = dir.join("merged.txt");
    let out = bin()
        .arg("report")
        .arg(&merged)
        .arg("-o")
        .arg(&text)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(i32::from(exit.code())));
    let verdict = verdict::judge(&m);
    assert_eq!(
        std::fs::read_to_string(&text).unwrap(),
        loadtest::report::text::text_report(&m, &verdict)
    );
    assert!(std::fs::read_to_string(&text)
        .unwrap()
        .contains("merged from 2 hosts"));
    let out = merge(&old, &old, &dir.join("x.json"));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already in the merge") && stderr.lines().count() == 1,
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_closed_pipe_ends_compare_quietly() {
    let (_, a, _) = two_hosts();
    let dir = temp_dir("pipe");
    let old = write(&dir, "old.json", &a);
    let mut child = bin()
        .arg("compare")
        .arg(&old)
        .arg(&old)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before the table is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_second_is_reported_and_kept_as_a_time_series() {
    let mock = start_mock();
    let profile =
        config::parse(r#"{"stages":"2:2500ms","warmup":"1s","defaults":{"stream":true}}"#).unwrap();
    let overrides = Overrides {
        target: Some(format!("http://{}", mock.addr())),
        ..Overrides::default()
    };
    let plan = plan::build(
        &profile,
        &overrides,
        vec![loadtest::host::allowed_cpus()[0]],
    )
    .unwrap();
    let mut seconds = Vec::new();
    let result = engine::run(&plan, |p| {
        if let engine::Progress::Second { stage, point, .. } = p {
            assert_eq!(stage, 0);
            seconds.push(point.second);
        }
    })
    .unwrap();
    mock.stop().expect("the mock shut down cleanly");
    let stage = &result.stages[0];
    // Whole seconds 1 and 2 were reported live, in order.
    assert_eq!(&seconds[..2], &[1, 2]);
    let series = &stage.series;
    assert!(series.len() >= 2 && series.len() <= 4, "{series:?}");
    assert!(series[0].warmup && !series[1].warmup);
    // Every finished request is in exactly one second.
    let total: u64 = series.iter().map(|p| p.window.requests).sum();
    let m = &stage.total.metrics;
    assert_eq!(total, m.requests + m.warmup_requests);
    let window = &series[1].window;
    assert!(window.latency.unpack().count() > 0 && window.ttft.unpack().count() > 0);
    // Seconds carry the wall clock they ended on.
    assert_eq!(series[1].unix_s, (stage.started_unix_ms + 2_000) / 1000);
    let summary = summary(&plan, result, "t");
    let text = loadtest::report::summary::summary_json(&summary, &verdict::judge(&summary));
    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["stages"][0]["series"][1]["second"], 2);
    assert!(value["stages"][0]["series"][1]["latency_ms"]["p50"].is_number());
}
