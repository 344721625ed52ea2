//! The `loadtest` binary as a user runs it: bad input gets one line on
//! stderr and exit code 2; `run --mock` runs a real test and writes the
//! summary.

mod common;

use common::cli::{bin, files_with_prefix, serial, stderr, temp_dir, write};

use std::process::{Command, Output};

/// Asserts exit code 2 with exactly one line on stderr containing `needle`.
fn assert_usage_error(output: Output, needle: &str) {
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(needle), "`{needle}` not in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn missing_profile_names_the_file() {
    let output = bin()
        .args(["run", "--config", "/nonexistent/p.json"])
        .output()
        .unwrap();
    assert_usage_error(output, "/nonexistent/p.json");
}

#[test]
fn malformed_profile_names_file_and_line() {
    let dir = temp_dir("malformed");
    let p = write(
        &dir,
        "bad.json",
        "{\n  \"stages\": \"1:1s\",\n  \"defaults\": {\"modle\": \"x\"}\n}\n",
    );
    let output = bin().args(["run", "--config"]).arg(&p).output().unwrap();
    assert_usage_error(
        output,
        "bad.json: defaults.modle: unknown field, did you mean \"model\"? (line 3",
    );
    let p = write(&dir, "trunc.json", "{\n  \"stages\": \"1:1s\",\n");
    let output = bin().args(["validate"]).arg(&p).output().unwrap();
    assert_usage_error(output, "trunc.json: line 3 column 0: EOF");
    let p = write(&dir, "trunc.json", "{\"stages\": ");
    let output = bin().args(["run", "--config"]).arg(&p).output().unwrap();
    assert_usage_error(output, "trunc.json");
}

#[test]
fn bad_stage_string_and_cpu_list() {
    let dir = temp_dir("stages");
    let p = write(
        &dir,
        "p.json",
        r#"{"defaults":{"target":"http://127.0.0.1:9"},"stages":"1:1s"}"#,
    );
    let output = bin()
        .args(["run", "--config"])
        .arg(&p)
        .args(["--stages", "5:xs"])
        .output()
        .unwrap();
    assert_usage_error(output, "--stages");
    let output = bin()
        .args(["run", "--config"])
        .arg(&p)
        .args(["--cpus", "0-999"])
        .output()
        .unwrap();
    assert_usage_error(output, "--cpus");
    let output = bin()
        .args(["run", "--config"])
        .arg(&p)
        .args(["--stages", "@10:1s", "--pacer-tick", "5us"])
        .output()
        .unwrap();
    assert_usage_error(output, "--pacer-tick: 5us is outside 10us..10000us");
    let output = bin()
        .args(["run", "--config"])
        .arg(&p)
        .args(["--shards", "0"])
        .output()
        .unwrap();
    assert_usage_error(output, "--shards");
}

#[test]
fn unreachable_target_is_a_usage_error() {
    let dir = temp_dir("unreachable");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = write(
        &dir,
        "p.json",
        &format!(r#"{{"defaults":{{"target":"http://127.0.0.1:{port}"}},"stages":"1:1s"}}"#),
    );
    let output = bin().args(["run", "--config"]).arg(&p).output().unwrap();
    assert_usage_error(output, "unreachable");
}

#[test]
fn run_with_the_built_in_mock_writes_a_summary() {
    let _serial = serial();
    let dir = temp_dir("mock");
    let out = dir.join("runs");
    let output = bin()
        .args([
            "run",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/profiles/ai-gateway.json"),
        ])
        .args([
            "--mock",
            "--stages",
            "1:300ms,4:400ms",
            "--warmup",
            "100ms",
            "--mock-tokens",
            "12",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        stderr(&output)
    );
    assert!(stdout.contains("ttft p50"), "{stdout}");
    let summaries: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("summary-")
        })
        .collect();
    assert_eq!(summaries.len(), 1);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summaries[0]).unwrap()).unwrap();
    assert_eq!(summary["schema"], 2);
    let stages = summary["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 2);
    for stage in stages {
        let total = &stage["total"]["metrics"];
        let requests = total["requests"].as_u64().unwrap();
        assert!(requests > 0);
        assert_eq!(total["ok"].as_u64().unwrap(), requests);
        assert_eq!(total["errors"], serde_json::json!({}));
        assert_eq!(total["completion_tokens"].as_u64().unwrap(), 12 * requests);
        assert!(total["ttft_ms"]["p50"].as_f64().is_some());
    }
    assert_eq!(stages[1]["load"]["users"], 4);
    // `report` renders the summary exactly as the run wrote each file.
    let id = summaries[0].file_name().unwrap().to_string_lossy()["summary-".len()..]
        .trim_end_matches(".json")
        .to_string();
    for (format, file) in [
        ("txt", format!("report-{id}.txt")),
        ("csv", format!("report-{id}.csv")),
        ("prom", format!("metrics-{id}.prom")),
        ("json", format!("summary-{id}.json")),
        ("html", format!("report-{id}.html")),
    ] {
        let rendered = bin()
            .arg("report")
            .arg(&summaries[0])
            .args(["--format", format])
            .output()
            .unwrap();
        assert_eq!(rendered.status.code(), Some(0), "{}", stderr(&rendered));
        let written = std::fs::read_to_string(out.join(&file)).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&rendered.stdout),
            written,
            "{format}"
        );
    }
}

#[test]
fn version_and_help_do_not_start_anything() {
    let output = bin().arg("--version").output().unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("loadtest "));
    let output = bin().args(["run", "--help"]).output().unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("--mock"));
}

#[test]
fn mock_refuses_a_port_already_in_use() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let output = bin().args(["mock", "--listen", &addr]).output().unwrap();
    assert_usage_error(output, "cannot listen");
}

#[test]
fn seed_style_command_line_runs_and_thresholds_set_the_exit_code() {
    let _serial = serial();
    let dir = temp_dir("seedstyle");
    // The seed tool's spelling: no subcommand, single-dash flags.
    let p = write(
        &dir,
        "strict.json",
        r#"{"defaults":{"target":"http://localhost:1","stream":true},"stages":"2:300ms",
            "thresholds":{"p95_ms":0.001,"error_rate":0.5}}"#,
    );
    let output = bin()
        .arg("-config")
        .arg(&p)
        .args(["-mock", "-vk", "sk-xyz", "-model", "prov/m", "-out"])
        .arg(dir.join("runs"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "stdout: {stdout}\nstderr: {}",
        stderr(&output)
    );
    assert!(
        stdout.contains("threshold FAIL 2:300ms all: p95"),
        "{stdout}"
    );
    assert!(stdout.contains("thresholds: FAIL"), "{stdout}");
    assert!(stdout.contains("model=prov/m"), "{stdout}");
    let summary = std::fs::read_dir(dir.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("summary-"))
        .unwrap();
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(summary).unwrap()).unwrap();
    assert_eq!(summary["verdict"]["pass"], false);
    assert_eq!(summary["verdict"]["thresholds"][0]["pass"], false);
    // The key is masked in the summary's copy of the plan.
    let auth = summary["plan"]["scenarios"][0]["headers"]["Authorization"].as_str();
    assert_eq!(auth, Some("Bearer ***"));
}

#[test]
fn a_run_in_which_nothing_succeeded_fails() {
    let _serial = serial();
    let dir = temp_dir("nothing");
    let p = write(
        &dir,
        "plain.json",
        r#"{"defaults":{"target":"http://localhost:1"},"stages":"1:300ms"}"#,
    );
    let output = bin()
        .args(["run", "--config"])
        .arg(&p)
        .args([
            "--mock",
            "--header",
            "x-mock-status: 503",
            "--quiet",
            "--out",
        ])
        .arg(dir.join("runs"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}{}", stderr(&output));
    assert!(
        stdout.contains("FAIL: no request succeeded in stage 1:300ms: all "),
        "{stdout}"
    );
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&files_with_prefix(&dir.join("runs"), "summary-")[0]).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["verdict"]["exit"], "failed");
    assert_eq!(
        summary["verdict"]["no_success"].as_array().unwrap().len(),
        1
    );
}

#[test]
fn validate_prints_the_resolved_profile() {
    let realistic = concat!(env!("CARGO_MANIFEST_DIR"), "/profiles/realistic.json");
    let output = bin()
        .args([
            "validate",
            realistic,
            "--target",
            "http://127.0.0.1:8081",
            "--seed",
            "5",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let scenarios = plan["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 3);
    assert_eq!(scenarios[0]["name"], "simple");
    assert_eq!(scenarios[0]["share_pct"], 55.0);
    assert_eq!(scenarios[1]["turns"]["max"], 4);
    assert_eq!(scenarios[2]["target"], "http://127.0.0.1:8081");
    assert_eq!(plan["seed"], 5);
    assert_eq!(plan["cache_mode"], "bust");

    let dir = temp_dir("validate");
    let p = write(
        &dir,
        "typo.json",
        r#"{"stages":"1:1s","defaults":{"target":"http://127.0.0.1:1"},
            "scenarios":[{},{},{"content":{"mdoe":"pool"}}]}"#,
    );
    let output = bin().arg("validate").arg(&p).output().unwrap();
    assert_usage_error(
        output,
        "typo.json: scenarios[2].content.mdoe: unknown field, did you mean \"mode\"?",
    );
}

/// Splits one RFC 4180 CSV line.
fn parse_csv_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().unwrap().push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

#[test]
fn every_turn_is_a_jsonl_line() {
    let _serial = serial();
    let dir = temp_dir("jsonl");
    let out = dir.join("runs");
    let output = bin()
        .args([
            "run",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/profiles/cross-ingress.json"),
            "--mock",
            "--stages",
            "4:400ms,@100:400ms",
            "--warmup",
            "100ms",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    // On a busy machine a 50 ms hiccup in the open-loop stage makes the run
    // invalid (exit 3, named as scheduler lag); the files are written anyway.
    let code = output.status.code();
    assert!(
        code == Some(0) || (code == Some(3) && stderr(&output).contains("scheduler lag")),
        "{code:?}: {}",
        stderr(&output)
    );
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&files_with_prefix(&out, "summary-")[0]).unwrap(),
    )
    .unwrap();
    let results = files_with_prefix(&out, "results-");
    assert_eq!(results.len(), 1);
    let (lines, partial) = loadtest::sink::read_lines(&results[0]).unwrap();
    assert!(!partial);
    let sent: u64 = summary["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["total"]["metrics"])
        .map(|m| m["requests"].as_u64().unwrap() + m["warmup_requests"].as_u64().unwrap())
        .sum();
    assert_eq!(lines.len() as u64, sent, "one line per finished turn");
    assert_eq!(summary["hosts"][0]["jsonl_lines"], sent);
    assert_eq!(summary["hosts"][0]["sink_dropped"], 0);
    let name = results[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let ts = name["results-".len()..name.len() - ".jsonl".len()].to_string();
    assert_eq!(summary["run_id"], ts.as_str());
    assert!(files_with_prefix(&out, "summary-")[0]
        .to_string_lossy()
        .contains(&ts));
    let mut scenarios = std::collections::BTreeSet::new();
    for line in &lines {
        assert_eq!(line["run"], ts.as_str());
        scenarios.insert(line["scenario"].as_str().unwrap().to_string());
        assert_eq!(line["status"], 200);
        assert!(line["error"].is_null());
        assert_eq!(line["tokens_source"], "server");
        assert!(line["completion_tokens"].as_u64().unwrap() > 0);
        assert!(line["latency_ms"].as_f64().unwrap() > 0.0);
        assert!(line["ttft_ms"].as_f64().unwrap() > 0.0);
        assert_eq!(
            uuid::Uuid::parse_str(line["conv_uuid"].as_str().unwrap())
                .unwrap()
                .get_version_num(),
            4
        );
        let open = line["stage"] == "@100:400ms";
        assert_eq!(line["intended_start_us"].is_u64(), open, "{line}");
        assert!(line["start_us"].as_u64().unwrap() > 1_700_000_000_000_000);
    }
    assert_eq!(scenarios.len(), 3, "every ingress format logged");
    // The text and CSV reports are written next to it, with the same stamp.
    let text = std::fs::read_to_string(out.join(format!("report-{ts}.txt"))).unwrap();
    assert!(text.contains("== generator health") && text.contains("openai-ingress"));
    let csv = std::fs::read_to_string(out.join(format!("report-{ts}.csv"))).unwrap();
    // Two stages × (three scenarios + all), plus the header.
    assert_eq!(csv.lines().count(), 1 + 2 * 4, "{csv}");
    // Read back: each stage's `all` row has the summary's figures.
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    for line in csv.lines().skip(1) {
        let fields = parse_csv_line(line);
        assert_eq!(fields.len(), header.len(), "{line}");
        if fields[col("scenario")] != "all" {
            continue;
        }
        let index: usize = fields[col("stage_index")].parse().unwrap();
        let stage = &summary["stages"][index];
        assert_eq!(fields[col("stage")], stage["label"].as_str().unwrap());
        let total = &stage["total"]["metrics"];
        assert_eq!(fields[col("requests")], total["requests"].to_string());
        let p99: f64 = fields[col("latency_p99_ms")].parse().unwrap();
        assert!((p99 - total["latency_ms"]["p99"].as_f64().unwrap()).abs() < 0.001);
    }
    // The Prometheus file passes promtool.
    let prom = out.join(format!("metrics-{ts}.prom"));
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(
        text.contains("# TYPE loadtest_ttft_seconds summary"),
        "{text}"
    );
    assert!(text.contains("loadtest_achieved_arrival_rate{"), "{text}");
    common::cli::promtool_accepts(&text);
    let warm = lines.iter().filter(|l| l["warmup"] == true).count() as u64;
    let warm_summary: u64 = summary["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["total"]["metrics"]["warmup_requests"].as_u64().unwrap())
        .sum();
    assert_eq!(warm, warm_summary);
}

#[test]
fn two_runs_at_once_into_one_folder_keep_their_own_files() {
    let _serial = serial();
    let dir = temp_dir("collide");
    let out = dir.join("runs");
    let start = || {
        bin()
            .args([
                "run",
                "--config",
                concat!(env!("CARGO_MANIFEST_DIR"), "/profiles/ai-gateway.json"),
                "--mock",
                "--stages",
                "2:300ms",
                "--warmup",
                "0s",
                "--quiet",
            ])
            .arg("--out")
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (start(), start());
    for child in [a, b] {
        let output = child.wait_with_output().unwrap();
        // Both runs' shards share one CPU on a two-CPU machine; waiting
        // for each other makes them invalid, and saying so is right.
        let err = stderr(&output);
        let starved = output.status.code() == Some(3) && err.contains("waited");
        assert!(output.status.code() == Some(0) || starved, "{err}");
    }
    let summaries = files_with_prefix(&out, "summary-");
    assert_eq!(summaries.len(), 2, "{summaries:?}");
    let mut ids = Vec::new();
    for path in &summaries {
        let summary = loadtest::results::RunSummary::read(path).unwrap();
        let id = summary.run_id.clone();
        for prefix in ["results-", "report-", "metrics-"] {
            let mine: Vec<_> = files_with_prefix(&out, prefix)
                .into_iter()
                .filter(|p| p.to_string_lossy().contains(&id))
                .collect();
            let want = if prefix == "report-" { 3 } else { 1 };
            assert_eq!(mine.len(), want, "{prefix} of {id}");
        }
        let results = out.join(format!("results-{id}.jsonl"));
        let (lines, partial) = loadtest::sink::read_lines(&results).unwrap();
        assert!(!partial);
        assert!(lines.iter().all(|l| l["run"] == id.as_str()));
        assert_eq!(lines.len() as u64, summary.hosts[0].jsonl_lines);
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1]);
}

#[test]
fn validate_and_run_resolve_the_same_plan() {
    let _serial = serial();
    let dir = temp_dir("sameplan");
    let profile = concat!(env!("CARGO_MANIFEST_DIR"), "/profiles/ai-gateway.json");
    let output = bin()
        .args(["validate", profile, "--mock", "--shards", "1"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let validated: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let out = dir.join("runs");
    let output = bin()
        .args(["run", "--config", profile, "--mock", "--shards", "1"])
        .args(["--stages", "1:200ms", "--warmup", "0s", "--quiet", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&files_with_prefix(&out, "summary-")[0]).unwrap(),
    )
    .unwrap();
    for key in ["cpus", "shards", "max_inflight", "seed", "cache_mode"] {
        assert_eq!(summary["plan"][key], validated[key], "{key}");
    }
}

#[test]
fn quiet_prints_only_the_final_results_and_a_closed_pipe_is_fine() {
    let _serial = serial();
    let dir = temp_dir("quiet");
    let profile = concat!(env!("CARGO_MANIFEST_DIR"), "/profiles/ai-gateway.json");
    let output = bin()
        .args(["run", "--config", profile, "--mock", "--stages", "1:200ms"])
        .args(["--warmup", "0s", "--quiet", "--out"])
        .arg(dir.join("runs"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("loadtest 0"), "no header: {stdout}");
    assert!(stdout.contains("summary: "), "{stdout}");
    assert!(stdout.contains("1:200ms"), "the final table: {stdout}");
    assert!(!stderr(&output).contains("started"), "{}", stderr(&output));
    // `| head -1`: the reader leaves after the first line; the run still
    // completes, writes its files and exits 0.
    let mut child = bin()
        .args(["run", "--config", profile, "--mock", "--stages", "1:200ms"])
        .args(["--warmup", "0s", "--out"])
        .arg(dir.join("piped"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(files_with_prefix(&dir.join("piped"), "summary-").len(), 1);
}

#[test]
fn a_killed_run_leaves_whole_jsonl_lines() {
    let _serial = serial();
    let dir = temp_dir("kill9");
    let out = dir.join("runs");
    let mut child = bin()
        .args([
            "run",
            "--config",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/profiles/perf-128-nonstream.json"
            ),
            "--mock",
            "--stages",
            "8:30s",
            "--warmup",
            "0s",
        ])
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait (bounded) until a good part of the file has been written.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let path = loop {
        let found = files_with_prefix(&out, "results-");
        if let Some(path) = found.first() {
            // Lines are under 1 KiB, so 1 MiB holds more than the 1,000
            // lines asserted below.
            if std::fs::metadata(path).map_or(0, |m| m.len()) > 1024 * 1024 {
                break path.clone();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no JSONL written in 20 s"
        );
        std::thread::yield_now();
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let (lines, _partial) = loadtest::sink::read_lines(&path).unwrap();
    assert!(lines.len() > 1000, "{} lines", lines.len());
    for line in &lines {
        assert!(
            line["conv_uuid"].is_string() && line["status"].is_u64(),
            "{line}"
        );
    }
    // No summary: the process never got to write one, and that is fine.
    assert!(files_with_prefix(&out, "summary-").is_empty());
}

#[test]
fn the_progress_line_is_rewritten_on_a_terminal() {
    let _serial = serial();
    // `script` gives the run a pseudo-terminal; without it, skip.
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` to provide a terminal");
        return;
    }
    let dir = temp_dir("tty");
    let cmd = format!(
        "{} run --config {} --mock --stages 2:2500ms --warmup 0s --out {}",
        env!("CARGO_BIN_EXE_loadtest"),
        concat!(env!("CARGO_MANIFEST_DIR"), "/profiles/ai-gateway.json"),
        dir.join("runs").display()
    );
    let output = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    // Each second rewrites the same line: carriage return, erase line.
    assert!(
        text.contains("\r\x1b[Kstage 1/1 2:2500ms 1/2s"),
        "no live line in: {text:?}"
    );
    assert!(text.contains("req/s, p50 "), "{text:?}");
    // --quiet: none (and --no-jsonl: no results file).
    let output = Command::new("script")
        .args(["-qec", &format!("{cmd} --quiet --no-jsonl"), "/dev/null"])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(!String::from_utf8_lossy(&output.stdout).contains("\x1b[Kstage"));
    let runs = dir.join("runs");
    assert_eq!(
        files_with_prefix(&runs, "results-").len(),
        1,
        "only the first run's log"
    );
    assert_eq!(files_with_prefix(&runs, "summary-").len(), 2);
}

#[test]
fn the_reactor_is_the_one_asked_for_and_a_refused_ring_falls_back_to_epoll() {
    let _serial = serial();
    let dir = temp_dir("reactor");
    let profile = concat!(env!("CARGO_MANIFEST_DIR"), "/profiles/ai-gateway.json");
    let run = |name: &str, io: Option<&str>, refuse: bool| {
        let out = dir.join(name);
        let mut command = bin();
        command
            .args(["run", "--config", profile, "--mock", "--shards", "1"])
            .args(["--stages", "2:300ms", "--warmup", "0s", "--out"])
            .arg(&out)
            .env_remove("LOADTEST_IO")
            .env_remove("LOADTEST_IO_SIMULATE_REFUSAL");
        if let Some(io) = io {
            command.args(["--io", io]);
        }
        if refuse {
            command.env("LOADTEST_IO_SIMULATE_REFUSAL", "1");
        }
        let output = command.output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let summary: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&files_with_prefix(&out, "summary-")[0]).unwrap(),
        )
        .unwrap();
        let m = &summary["stages"][0]["total"]["metrics"];
        assert!(m["requests"].as_u64().unwrap() > 0);
        assert_eq!(m["requests"], m["ok"], "{name}: {m}");
        let reactor = summary["plan"]["reactor"].as_str().unwrap().to_string();
        let header = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(header.contains(&format!("{reactor} reactor")), "{header}");
        (reactor, stderr(&output))
    };
    // Asked for io_uring on a host that refuses it: epoll, and one line
    // saying why.
    let (reactor, err) = run("refused", Some("uring"), true);
    assert_eq!(reactor, "epoll");
    assert!(
        err.contains("running on epoll: io_uring_setup refused (simulated"),
        "{err}"
    );
    let (reactor, err) = run("epoll", Some("epoll"), false);
    assert_eq!(reactor, "epoll");
    assert!(!err.contains("running on epoll"), "{err}");
    // By default, io_uring wherever it works here.
    let (reactor, err) = run("default", None, false);
    if err.contains("running on epoll") {
        assert_eq!(reactor, "epoll", "{err}");
    } else {
        assert_eq!(reactor, "io_uring");
    }
}
