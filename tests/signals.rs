//! Signals against a running `loadtest run --mock`: the first SIGINT,
//! SIGTERM or SIGHUP stops the stage and writes every output marked as
//! stopped; a second stops waiting for requests in flight and still
//! writes them; a third exits at once and says what was not written.
//! Each test waits for the stage to start (read from stderr), never for
//! a time.

mod common;

use common::cli::{bin, files_with_prefix, temp_dir};
use std::io::{BufRead, BufReader, Lines};
use std::path::Path;
use std::process::{Child, ChildStderr, Stdio};

/// Starts a run against the in-process mock writing into `out`, and
/// returns once its only stage has started, with the rest of stderr.
fn start(out: &Path, stages: &str, mock_latency: &str) -> (Child, Lines<BufReader<ChildStderr>>) {
    let mut child = bin()
        .args(["run", "--config"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/profiles/perf-128-nonstream.json"
        ))
        .args(["--mock", "--stages", stages, "--warmup", "0s"])
        .args(["--mock-latency", mock_latency])
        .arg("--out")
        .arg(out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let last = stages.split(',').count();
    let started = format!("stage {last}/{last} started");
    for line in stderr.by_ref() {
        if line.unwrap().starts_with(&started) {
            break;
        }
    }
    (child, stderr)
}

fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: plain kill(2) to our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, signal) };
}

/// Reads stderr until a line contains `needle`; returns whether one did.
fn wait_for(stderr: &mut Lines<BufReader<ChildStderr>>, needle: &str) -> bool {
    stderr.by_ref().any(|line| line.unwrap().contains(needle))
}

/// Waits for the child; returns its exit code, stdout and the rest of
/// stderr.
fn finish(mut child: Child, stderr: Lines<BufReader<ChildStderr>>) -> (i32, String, String) {
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    let rest: Vec<String> = stderr.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    (status.code().unwrap_or(-1), stdout, rest.join("\n"))
}

fn summary(out: &Path) -> serde_json::Value {
    let path = files_with_prefix(out, "summary-").remove(0);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every output of one run is there: JSONL, summary, text, CSV, `.prom`.
fn assert_every_output(out: &Path) {
    for prefix in ["results-", "summary-", "report-", "metrics-"] {
        assert!(
            !files_with_prefix(out, prefix).is_empty(),
            "no {prefix}* in {out:?}"
        );
    }
    let reports = files_with_prefix(out, "report-");
    assert_eq!(reports.len(), 3, "report .txt, .html and .csv: {reports:?}");
}

#[test]
fn ctrl_c_keeps_what_was_measured() {
    let dir = temp_dir("interrupt");
    let out = dir.join("runs");
    let (child, stderr) = start(&out, "2:300ms,2:60s", "0s");
    signal(&child, libc::SIGINT);
    let (code, stdout, _) = finish(child, stderr);
    assert_eq!(code, 130, "{stdout}");
    assert!(stdout.contains("\n2:1m*"), "stopped stage row: {stdout}");
    let summary = summary(&out);
    let stages = summary["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 2);
    assert_eq!(stages[1]["stopped_early"], true);
    // The per-turn log was flushed and closed too.
    let (lines, partial) =
        loadtest::sink::read_lines(&files_with_prefix(&out, "results-")[0]).unwrap();
    assert!(!partial);
    assert_eq!(summary["hosts"][0]["jsonl_lines"], lines.len() as u64);
    assert!(stages[1]["total"]["metrics"]["requests"].as_u64().unwrap() > 0);
    assert!(stages[1]["measured_s"].as_f64().unwrap() < 30.0);
    assert_eq!(summary["stop"]["kind"], "interrupted");
    assert_eq!(summary["stop"]["signal"], "SIGINT");
    assert_eq!(summary["verdict"]["exit"], "interrupted");
}

#[test]
fn sigterm_and_sighup_stop_like_ctrl_c_and_write_every_output() {
    for (sig, name, code) in [
        (libc::SIGTERM, "SIGTERM", 143),
        (libc::SIGHUP, "SIGHUP", 129),
    ] {
        let dir = temp_dir(&format!("signal-{sig}"));
        let out = dir.join("runs");
        let (child, stderr) = start(&out, "2:60s", "0s");
        signal(&child, sig);
        let (exit, stdout, rest) = finish(child, stderr);
        assert_eq!(exit, code, "{name}: {stdout}\n{rest}");
        assert!(rest.contains(&format!("stopped by {name}")), "{rest}");
        assert_every_output(&out);
        let summary = summary(&out);
        assert_eq!(summary["stop"]["signal"], name);
        assert_eq!(summary["stages"][0]["stopped_early"], true);
        let prom = files_with_prefix(&out, "metrics-").remove(0);
        let prom = std::fs::read_to_string(prom).unwrap();
        assert!(prom.contains(&format!("loadtest_run_stopped{{signal=\"{name}\"}} 1")));
        let csv = files_with_prefix(&out, "report-")
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == "csv"))
            .unwrap();
        let csv = std::fs::read_to_string(csv).unwrap();
        assert!(
            csv.lines()
                .nth(1)
                .unwrap()
                .ends_with(&format!("stopped by {name}")),
            "{csv}"
        );
        let text = files_with_prefix(&out, "report-")
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == "txt"))
            .unwrap();
        let text = std::fs::read_to_string(text).unwrap();
        assert!(
            text.contains(&format!("RUN ENDED EARLY: stopped by {name}")),
            "{text}"
        );
    }
}

#[test]
fn a_second_interrupt_abandons_requests_in_flight_and_still_writes_every_output() {
    let dir = temp_dir("second-interrupt");
    let out = dir.join("runs");
    // Every answer takes a minute: the two users' requests are in flight.
    let (child, mut stderr) = start(&out, "2:60s", "60s");
    signal(&child, libc::SIGINT);
    assert!(wait_for(&mut stderr, "loadtest: stopping"));
    signal(&child, libc::SIGINT);
    let (code, stdout, rest) = finish(child, stderr);
    assert_eq!(code, 130, "{stdout}\n{rest}");
    assert!(
        rest.contains("2 requests in flight were abandoned"),
        "{rest}"
    );
    assert_every_output(&out);
    let summary = summary(&out);
    assert_eq!(summary["stop"]["abandoned"], 2);
    let m = &summary["stages"][0]["total"]["metrics"];
    assert_eq!(m["requests"], 0, "abandoned requests are not counted");
}

#[test]
fn a_third_interrupt_exits_at_once_and_says_what_was_not_written() {
    let dir = temp_dir("third-interrupt");
    let out = dir.join("runs");
    let (child, stderr) = start(&out, "2:60s", "60s");
    // Three different signals: a signal already pending is not queued
    // twice, so three SIGINTs sent at once may arrive as fewer. Pending
    // signals are taken lowest number first, so in this order SIGHUP is
    // first however they arrive.
    for sig in [libc::SIGHUP, libc::SIGINT, libc::SIGTERM] {
        signal(&child, sig);
    }
    let (code, _, rest) = finish(child, stderr);
    assert_eq!(code, 129, "the first signal's code ({code}): {rest}");
    assert!(rest.contains("were NOT written"), "{rest}");
    assert!(files_with_prefix(&out, "summary-").is_empty());
    assert!(files_with_prefix(&out, "report-").is_empty());
    assert_eq!(files_with_prefix(&out, "results-").len(), 1);
}

#[test]
fn a_drain_longer_than_the_grace_period_is_abandoned() {
    let dir = temp_dir("grace");
    let out = dir.join("runs");
    let (child, stderr) = start(&out, "2:60s", "60s");
    signal(&child, libc::SIGTERM);
    let (code, stdout, rest) = finish(child, stderr);
    assert_eq!(code, 143, "{stdout}\n{rest}");
    assert_every_output(&out);
    // Waited `limits::STOP_GRACE`, not the minute the answers take.
    let summary = summary(&out);
    assert_eq!(summary["stop"]["abandoned"], 2);
    let elapsed = summary["stages"][0]["elapsed_s"].as_f64().unwrap();
    let grace = loadtest::limits::STOP_GRACE.as_secs_f64();
    assert!((grace..grace + 20.0).contains(&elapsed), "{elapsed}");
}
