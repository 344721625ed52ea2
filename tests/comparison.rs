//! Services compared in one window, against two built-in mocks in-process
//! on loopback: the deltas are what the mocks were told to differ by, each
//! service's counts are what its mock served, and a service that fails is
//! flagged without touching the other's figures.
//!
//! Every load loop is bounded by short stages (under a second) and a
//! handful of users.

mod common;

use loadtest::config;
use loadtest::engine;
use loadtest::mock::{Delay, FaultRates, MockServer};
use loadtest::plan::{self, Overrides, Plan};
use loadtest::results::{Host, PlanInfo, RunSummary};
use std::time::Duration;

use common::cli::{bin, serial, stderr, temp_dir, write};
use common::start_mock;

fn mock_with_ttft(ms: u64) -> MockServer {
    start_mock(|c| {
        c.ttft = Delay::Fixed(Duration::from_millis(ms));
        c.tokens = Some(4);
    })
}

fn compared_plan(profile: &str, services: &[(&str, &MockServer)], extra: Overrides) -> Plan {
    let profile = config::parse(profile).expect("profile parses");
    let overrides = Overrides {
        services: services
            .iter()
            .map(|(name, mock)| {
                plan::parse_service(&format!("{name}=http://{}", mock.addr())).unwrap()
            })
            .collect(),
        ..extra
    };
    plan::build(&profile, &overrides, common::cpus().0).expect("plan builds")
}

fn summarize(plan: &Plan) -> RunSummary {
    let result = engine::run(plan, |_| {}).expect("run completes");
    assert!(result.stop.is_none(), "stopped: {:?}", result.stop);
    RunSummary::new(PlanInfo::of(plan), result, Host::default())
}

/// Requests a service's lanes started, warm-up included (what its mock saw).
fn sent_to(run: &RunSummary, service: &str) -> u64 {
    run.stages
        .iter()
        .flat_map(|s| &s.scenarios)
        .filter(|s| s.service.as_deref() == Some(service))
        .map(|s| s.metrics.requests + s.metrics.warmup_requests)
        .sum()
}

#[test]
fn two_mocks_30_ms_apart_show_a_30_ms_ttft_delta_in_every_round() {
    let _serial = serial();
    let direct = mock_with_ttft(20);
    let gw = mock_with_ttft(50);
    let plan = compared_plan(
        r#"{"defaults":{"stream":true,"max_tokens":4},
            "scenarios":[{"name":"short","weight":3},{"name":"chat","weight":1,"turns":2}],
            "stages":"4:700ms"}"#,
        &[("direct", &direct), ("gw", &gw)],
        Overrides {
            rounds: Some(3),
            baseline: Some("direct".into()),
            ..Overrides::default()
        },
    );
    assert_eq!(plan.stages.len(), 3, "3 rounds of one stage");
    assert_eq!(plan.scenarios.len(), 4, "2 scenarios × 2 services");
    let run = summarize(&plan);
    let comparison = run.comparison.as_ref().expect("a comparison");
    assert_eq!(comparison.stages.len(), 3);
    for stage in &comparison.stages {
        assert_eq!(stage.baseline.as_deref(), Some("direct"));
        assert!(stage.streamed);
        let gw_row = stage.services.iter().find(|r| r.service == "gw").unwrap();
        let delta = gw_row.ttft_ms_p50_delta.expect("a TTFT delta");
        assert!(
            (27.0..33.0).contains(&delta),
            "round {:?}: {delta}",
            stage.round
        );
        let base = stage
            .services
            .iter()
            .find(|r| r.service == "direct")
            .unwrap();
        assert_eq!(base.ttft_ms_p50_delta, Some(0.0));
        assert!(gw_row.requests > 0 && base.requests > gw_row.requests);
    }
    let overall = &comparison.overall[0];
    let gw_row = overall.services.iter().find(|r| r.service == "gw").unwrap();
    let spread = gw_row.spread.as_ref().unwrap().ttft_ms_p50_delta.unwrap();
    assert!(spread.min <= gw_row.ttft_ms_p50_delta.unwrap() + 0.5);
    assert!(spread.max - spread.min < 6.0, "{spread:?}");
    // Each service's requests are exactly what its own mock served.
    assert_eq!(
        sent_to(&run, "direct"),
        direct.stop().unwrap().chat_responses
    );
    assert_eq!(sent_to(&run, "gw"), gw.stop().unwrap().chat_responses);
    assert!(loadtest::verdict::fairness(&run).is_empty());
}

#[test]
fn a_failing_service_is_flagged_and_the_other_is_untouched() {
    let _serial = serial();
    let good = mock_with_ttft(5);
    let bad = start_mock(|c| {
        c.faults = FaultRates::parse("status_500=1").unwrap();
    });
    let plan = compared_plan(
        r#"{"defaults":{"stream":true,"max_tokens":4},"stages":"3:400ms"}"#,
        &[("good", &good), ("bad", &bad)],
        Overrides::default(),
    );
    let run = summarize(&plan);
    let stage = &run.stages[0];
    let good_stats = stage.services.iter().find(|s| s.name == "good").unwrap();
    let bad_stats = stage.services.iter().find(|s| s.name == "bad").unwrap();
    assert!(good_stats.metrics.requests > 0);
    assert_eq!(good_stats.metrics.ok, good_stats.metrics.requests);
    assert_eq!(bad_stats.metrics.ok, 0);
    assert_eq!(sent_to(&run, "good"), good.stop().unwrap().chat_responses);
    // No baseline named: the fastest that succeeded is it.
    let compared = &run.comparison.as_ref().unwrap().stages[0];
    assert_eq!(compared.baseline.as_deref(), Some("good"));
    let flags = loadtest::verdict::fairness(&run);
    assert_eq!(flags.len(), 1, "{flags:?}");
    assert!(flags[0].contains("bad failed 100.0 %"), "{flags:?}");
    bad.stop().unwrap();
}

#[test]
fn open_loop_arrivals_go_to_every_service_alike() {
    let _serial = serial();
    let a = mock_with_ttft(1);
    let b = mock_with_ttft(1);
    let plan = compared_plan(
        r#"{"defaults":{"stream":true,"max_tokens":4},
            "scenarios":[{"name":"x","weight":2},{"name":"y","weight":1}],
            "stages":"@60:500ms"}"#,
        &[("a", &a), ("b", &b)],
        Overrides::default(),
    );
    let run = summarize(&plan);
    let stage = &run.stages[0];
    // The same arrivals, scenario by scenario, on both services.
    for pair in stage.scenarios.chunks(2) {
        assert_eq!(
            pair[0].metrics.arrivals, pair[1].metrics.arrivals,
            "{}",
            pair[0].name
        );
        assert!(pair[0].metrics.arrivals > 0);
    }
    let sent: Vec<u64> = stage
        .services
        .iter()
        .map(|s| s.metrics.arrivals_sent)
        .collect();
    assert_eq!(sent[0], sent[1]);
    assert_eq!(sent_to(&run, "a"), a.stop().unwrap().chat_responses);
    assert_eq!(sent_to(&run, "b"), b.stop().unwrap().chat_responses);
}

#[test]
fn a_summary_with_services_reads_back_and_merges_per_service() {
    let _serial = serial();
    let a = mock_with_ttft(1);
    let b = mock_with_ttft(1);
    let plan = compared_plan(
        r#"{"defaults":{"stream":true,"max_tokens":4},"stages":"2:300ms"}"#,
        &[("a", &a), ("b", &b)],
        Overrides::default(),
    );
    let run = summarize(&plan);
    let text = serde_json::to_string(&run).unwrap();
    let back = RunSummary::parse(&text).expect("reads back");
    assert_eq!(back, run);
    assert!(text.contains("\"ttft_ms_p50_delta\""), "comparison written");
    let mut other = run.clone();
    other.hosts[0].run_id = "other-host".into();
    let merged = loadtest::results::merge(vec![("1".into(), run.clone()), ("2".into(), other)])
        .expect("merges");
    let requests = |r: &RunSummary, name: &str| {
        r.stages[0]
            .services
            .iter()
            .find(|s| s.name == name)
            .unwrap()
            .metrics
            .requests
    };
    assert_eq!(requests(&merged, "a"), 2 * requests(&run, "a"));
    // compare pairs each service's total, and finds nothing one-sided.
    let compared = loadtest::compare::compare(&run, &merged, 10.0).expect("compares");
    assert!(compared.one_sided.is_empty(), "{:?}", compared.one_sided);
    for service in ["all@a", "all@b"] {
        assert!(compared
            .deltas
            .iter()
            .any(|d| d.scenario == service && d.metric == "rps"));
    }
    let rows = &merged.comparison.as_ref().unwrap().stages[0].services;
    assert_eq!(
        rows.iter().find(|r| r.service == "b").unwrap().requests,
        2 * requests(&run, "b")
    );
    a.stop().unwrap();
    b.stop().unwrap();
}

/// `run` with these flags against an unreachable target: only planning
/// runs, so a bad flag is a usage error before any load.
fn planned(flags: &[&str]) -> std::process::Output {
    let dir = temp_dir("service-flags");
    let profile = write(&dir, "p.json", r#"{"stages":"1:1s"}"#);
    bin()
        .arg("validate")
        .arg(&profile)
        .args(flags)
        .env_remove("LOADTEST_TEST_UNSET_KEY")
        .output()
        .unwrap()
}

#[test]
fn a_bad_service_flag_is_one_line_and_exit_2() {
    for (flags, says) in [
        (
            &["--service", "http://127.0.0.1:9"][..],
            "expected NAME=URL",
        ),
        (
            &["--service", "gw=http://127.0.0.1:9,modle=m"][..],
            "unknown key `modle`",
        ),
        (
            &[
                "--service",
                "gw=http://127.0.0.1:9,key_env=LOADTEST_TEST_UNSET_KEY",
            ][..],
            "`LOADTEST_TEST_UNSET_KEY` is not set",
        ),
        (
            &["--service", "gw=http://127.0.0.1:9", "--baseline", "direct"][..],
            "no service is named `direct`",
        ),
        (&["--rounds", "3"][..], "there are none"),
    ] {
        let output = planned(flags);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.contains(says), "{flags:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{flags:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn a_comparison_against_the_mock_prints_deltas_and_never_shows_a_key() {
    let _serial = serial();
    let secret = "sk-cmp-very-secret-0042";
    let dir = temp_dir("service-mock");
    let out = dir.join("runs");
    let profile = write(
        &dir,
        "p.json",
        r#"{"defaults":{"stream":true,"max_tokens":4},"stages":"2:300ms"}"#,
    );
    let output = bin()
        .args(["run", "--config"])
        .arg(&profile)
        .args([
            "--mock",
            "--mock-ttft",
            "2ms",
            "--rounds",
            "2",
            "--baseline",
            "direct",
        ])
        .args(["--service", "direct=mock,key_env=LOADTEST_TEST_KEY"])
        .args([
            "--service",
            "gw=mock,key_env=LOADTEST_TEST_KEY,header=x-route: b",
        ])
        .arg("--out")
        .arg(&out)
        .env("LOADTEST_TEST_KEY", secret)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{err}");
    assert!(stdout.contains("deltas against direct"), "{stdout}");
    assert!(stdout.contains("services over all 2 rounds"), "{stdout}");
    assert!(!stdout.contains(secret) && !err.contains(secret));
    let mut checked = 0;
    for file in std::fs::read_dir(&out).unwrap() {
        let path = file.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(secret), "{} shows the key", path.display());
        checked += 1;
    }
    assert_eq!(checked, 6, "every output file was written");
    let summary = common::cli::files_with_prefix(&out, "summary-");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary[0]).unwrap()).unwrap();
    assert_eq!(
        summary["plan"]["services"][0]["key_env"],
        "LOADTEST_TEST_KEY"
    );
    let overall = &summary["comparison"]["overall"][0]["services"];
    assert_eq!(overall[0]["service"], "direct");
    assert_eq!(overall[0]["ttft_ms_p50_delta"], 0.0);
    assert!(overall[1]["ttft_ms_p50_delta"].is_number(), "{overall}");
    let html = common::cli::files_with_prefix(&out, "report-")
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "html"))
        .unwrap();
    let html = std::fs::read_to_string(html).unwrap();
    let services = &html[html.find("<h2>Services</h2>").expect("a services section")..];
    assert!(services.contains("<svg") && services.contains("Over all 2 rounds"));
    let prom = common::cli::files_with_prefix(&out, "metrics-");
    let prom = std::fs::read_to_string(&prom[0]).unwrap();
    assert!(prom.contains("loadtest_service_delta_seconds{"), "{prom}");
    assert!(prom.contains(",service=\"gw\""), "{prom}");
    common::cli::promtool_accepts(&prom);
    let jsonl = common::cli::files_with_prefix(&out, "results-");
    let first = std::fs::read_to_string(&jsonl[0]).unwrap();
    let line: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert!(
        line["service"] == "direct" || line["service"] == "gw",
        "{line}"
    );
}
