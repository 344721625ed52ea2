//! Summaries after the run: merging several hosts' summaries exactly, and
//! comparing two runs with a CI exit code.

mod common;

use loadtest::engine::{self, RunResult};
use loadtest::metrics::StageMetrics;
use loadtest::mock::MockServer;
use loadtest::plan::{self, Overrides, Plan};
use loadtest::{combine, config, report, rt};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;

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
    plan::build(&profile, &overrides, vec![rt::allowed_cpus()[0]]).unwrap()
}

fn run(plan: &Plan) -> RunResult {
    engine::run(plan, |_| {}).unwrap()
}

#[test]
fn two_hosts_merge_into_one_exact_summary() {
    let mock = start_mock();
    let plan = plan(&mock);
    let (a, b) = (run(&plan), run(&plan));
    mock.stop().expect("the mock shut down cleanly");
    let health = report::Health {
        local_port_range: Some((32768, 60999)),
        ..report::Health::default()
    };
    let sa = report::summary_json(&plan, &a, &health, "a");
    let sb = report::summary_json(&plan, &b, &health, "b");
    // Hosts whose port ranges differ leave the merged range unknown.
    let wider = report::Health {
        local_port_range: Some((1024, 65535)),
        ..report::Health::default()
    };
    let sc = report::summary_json(&plan, &b, &wider, "c");
    let mixed = combine::merge(&[("a.json".into(), sa.clone()), ("c.json".into(), sc)]).unwrap();
    assert!(mixed["generator_health"]["local_port_range"].is_null());
    let merged = combine::merge(&[("a.json".into(), sa), ("b.json".into(), sb)]).unwrap();
    assert_eq!(
        merged["generator_health"]["local_port_range"],
        json!([32768, 60999])
    );
    for (index, stage) in merged["stages"].as_array().unwrap().iter().enumerate() {
        // What one generator would have measured had it done both halves.
        let mut whole = StageMetrics::new();
        whole.merge(&a.stages[index].metrics);
        whole.merge(&b.stages[index].metrics);
        assert_eq!(stage["requests"], whole.requests);
        assert_eq!(stage["ok"], whole.ok);
        assert_eq!(stage["completion_tokens"], whole.completion_tokens);
        assert_eq!(stage["status_codes"]["200"], whole.ok);
        for (key, hist) in [
            ("latency_ms", &whole.latency),
            ("ttft_ms", &whole.ttft),
            ("itl_ms", &whole.itl),
            ("latency_corrected_ms", &whole.latency_corrected),
            ("sched_lag_ms", &whole.sched_lag),
        ] {
            if hist.count() == 0 {
                assert!(stage[key].is_null(), "{key}");
                continue;
            }
            assert_eq!(stage[key]["count"], hist.count(), "{key}");
            for p in ["p50", "p90", "p99", "p99_9", "max", "min"] {
                let want = match p {
                    "max" => hist.max_ms(),
                    "min" => hist.min_ms(),
                    "p99_9" => hist.percentile_ms(99.9),
                    other => hist.percentile_ms(other[1..].parse().unwrap()),
                };
                assert_eq!(stage[key][p].as_f64(), want, "stage {index} {key} {p}");
            }
        }
        // Rates add: both hosts ran the stage at the same time.
        let rps = a.stages[index].rps() + b.stages[index].rps();
        assert!((stage["rps"].as_f64().unwrap() - rps).abs() < 1e-6);
        // Scenarios merge too.
        for (i, scenario) in stage["scenarios"].as_array().unwrap().iter().enumerate() {
            let n = a.stages[index].scenarios[i].requests + b.stages[index].scenarios[i].requests;
            assert_eq!(scenario["requests"], n);
        }
    }
    assert_eq!(merged["merged_from"].as_array().unwrap().len(), 2);
    assert_eq!(merged["stages"][1]["open_loop"]["target_rate"], 400.0);
    // The knee is worked out again on the merged figures (400/s, not one
    // host's 200/s).
    let knee = &merged["knee"];
    match knee["highest_ok"]["rate"].as_f64() {
        Some(rate) => assert_eq!(rate, 400.0, "{knee}"),
        None => assert_eq!(knee["first_broken"]["stage"], "@200:300ms", "{knee}"),
    }
}

#[test]
fn merge_refuses_runs_that_do_not_line_up() {
    let summary = |stages: &[&str], scenarios: &[&str]| {
        json!({
            "schema": 1,
            "plan": {"scenarios": scenarios.iter().map(|s| json!({"name": s})).collect::<Vec<_>>()},
            "stages": stages.iter().map(|s| json!({"label": s, "scenarios": []})).collect::<Vec<_>>(),
        })
    };
    let a = summary(&["1:10s", "@100:10s"], &["x"]);
    let err = combine::merge(&[
        ("a".into(), a.clone()),
        ("b".into(), summary(&["1:10s"], &["x"])),
    ])
    .unwrap_err();
    assert!(
        err.contains("b: stages") && err.contains("do not line up"),
        "{err}"
    );
    let err = combine::merge(&[
        ("a".into(), a.clone()),
        ("b".into(), summary(&["1:10s", "@100:10s"], &["y"])),
    ])
    .unwrap_err();
    assert!(err.contains("b: scenarios"), "{err}");
    let err =
        combine::merge(&[("a".into(), a.clone()), ("c".into(), json!({"schema": 2}))]).unwrap_err();
    assert!(err.contains("c: not a loadtest summary"), "{err}");
    // Damaged files are errors, never panics.
    for damaged in [
        json!({"schema": 1, "stages": [3]}),
        json!({"schema": 1, "stages": [{"scenarios": [1]}]}),
        json!({"schema": 1, "stages": [{"turns": [7]}]}),
        json!({"schema": 1, "stages": [], "generator_health": 5}),
        json!({"schema": 1}),
    ] {
        let result = std::panic::catch_unwind(|| {
            combine::merge(&[("a".into(), a.clone()), ("d".into(), damaged.clone())])
        });
        assert!(matches!(result, Ok(Err(_))), "{damaged}");
    }
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_loadtest"))
}

fn write(dir: &std::path::Path, name: &str, value: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string(value).unwrap()).unwrap();
    path
}

#[test]
fn compare_and_merge_on_the_command_line() {
    let mock = start_mock();
    let plan = plan(&mock);
    let result = run(&plan);
    mock.stop().expect("the mock shut down cleanly");
    let summary = report::summary_json(&plan, &result, &report::Health::default(), "x");
    let dir = std::env::temp_dir().join(format!("loadtest-outputs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let old = write(&dir, "old.json", &summary);
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
    // Half the throughput and twice the p99: regressions, exit 1.
    let mut worse = summary.clone();
    let rps = worse["stages"][0]["rps"].as_f64().unwrap();
    worse["stages"][0]["rps"] = json!(rps / 2.0);
    let p99 = worse["stages"][0]["latency_ms"]["p99"].as_f64().unwrap();
    worse["stages"][0]["latency_ms"]["p99"] = json!(p99 * 2.0);
    let new = write(&dir, "new.json", &worse);
    let out = bin().arg("compare").arg(&old).arg(&new).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2 regression(s)"), "{text}");
    assert!(text.contains("latency_p99_ms") && text.contains("REGRESSION"));
    // The seed tool's spelling, with a threshold the change stays under.
    let both = format!("{},{}", old.display(), new.display());
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
    // Merge of two copies: counts double.
    let merge = |a: &std::path::Path, b: &std::path::Path, to: &std::path::Path| {
        bin()
            .arg("merge")
            .arg(a)
            .arg(b)
            .arg("-o")
            .arg(to)
            .output()
            .unwrap()
    };
    let merged = dir.join("merged.json");
    let out = merge(&old, &old, &merged);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: Value = serde_json::from_str(&std::fs::read_to_string(&merged).unwrap()).unwrap();
    assert_eq!(
        m["stages"][0]["requests"].as_u64().unwrap(),
        2 * summary["stages"][0]["requests"].as_u64().unwrap()
    );
    // A caution from one host survives the merge, named after its file.
    let mut cautioned = summary.clone();
    cautioned["generator_health"]["cautions"] = json!(["stage 1: scheduler lag p99 3.0 ms > 1 ms"]);
    let cautioned = write(&dir, "cautioned.json", &cautioned);
    let out = merge(&old, &cautioned, &merged);
    assert_eq!(out.status.code(), Some(0));
    let m: Value = serde_json::from_str(&std::fs::read_to_string(&merged).unwrap()).unwrap();
    // (The first file may carry cautions of its own: this debug build's
    // open stage can run late.)
    let own = summary["generator_health"]["cautions"]
        .as_array()
        .unwrap()
        .len();
    let cautions = m["generator_health"]["cautions"].as_array().unwrap();
    assert_eq!(cautions.len(), own + 1, "{cautions:?}");
    assert!(
        cautions.iter().any(|c| {
            let c = c.as_str().unwrap();
            c.contains("cautioned.json") && c.contains("lag p99 3.0 ms")
        }),
        "{cautions:?}"
    );
    assert_eq!(
        m["generator_health"]["valid"],
        summary["generator_health"]["valid"]
    );
    // Mismatched runs are refused with exit 2.
    let mut other = summary.clone();
    other["stages"][0]["label"] = json!("9:9s");
    let other = write(&dir, "other.json", &other);
    let out = merge(&old, &other, &dir.join("x.json"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("do not line up"));
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
    let plan = plan::build(&profile, &overrides, vec![rt::allowed_cpus()[0]]).unwrap();
    let mut seconds = Vec::new();
    let result = engine::run(&plan, |p| {
        if let engine::Progress::Second { stage, point } = p {
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
    let total: u64 = series.iter().map(|p| p.requests).sum();
    assert_eq!(
        total,
        stage.metrics.requests + stage.metrics.warmup_requests
    );
    assert!(series[1].latency_p50_ms.is_some() && series[1].ttft_p50_ms.is_some());
    let summary = report::summary_json(&plan, &result, &report::Health::default(), "t");
    assert_eq!(summary["stages"][0]["time_series"][1]["second"], json!(2));
}
