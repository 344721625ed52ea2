//! `run --metrics-listen`: a run scraped while it goes. The scrapes are
//! taken when stderr says the second stage started (never after a sleep);
//! counters only grow, the exposition passes promtool where installed,
//! and a finished stage's totals equal its summary's.

mod common;

use common::cli::{bin, files_with_prefix, serial, temp_dir};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;

/// `GET /metrics` from `addr`; the body.
fn scrape(addr: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// The value of the sample line starting with `name` (labels included).
fn value(text: &str, name: &str) -> u64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn a_run_is_scraped_while_it_goes() {
    let _serial = serial();
    let dir = temp_dir("live");
    let out = dir.join("runs");
    let mut child = bin()
        .args(["run", "--config"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/profiles/perf-128-nonstream.json"
        ))
        .args(["--mock", "--stages", "2:1s,@40:1500ms", "--warmup", "0s"])
        .args(["--metrics-listen", "127.0.0.1:0", "--out"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut addr = None;
    for line in stderr.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("loadtest: live metrics on http://") {
            addr = Some(rest.trim_end_matches("/metrics").to_string());
        }
        if line.starts_with("stage 2/2 started") {
            break;
        }
    }
    let addr = addr.expect("the address is printed");
    let first = scrape(&addr);
    let second = scrape(&addr);
    let _ = stderr.count();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    common::cli::promtool_accepts(&first);
    let total = "loadtest_live_requests_total ";
    assert!(value(&first, total) > 0, "{first}");
    assert!(value(&second, total) >= value(&first, total));
    assert!(
        first.contains("loadtest_live_stage{stage=\"@40:1500ms\""),
        "{first}"
    );
    assert_eq!(
        value(
            &first,
            "loadtest_live_target_arrival_rate{stage=\"@40:1500ms\""
        ),
        40
    );
    common::cli::promtool_accepts(&second);
    // The first stage's totals per scenario, as its summary has them.
    let summary = files_with_prefix(&out, "summary-").remove(0);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(summary).unwrap()).unwrap();
    let scenario = &summary["stages"][0]["scenarios"][0];
    let name = scenario["name"].as_str().unwrap();
    let requests = scenario["metrics"]["requests"].as_u64().unwrap();
    assert_eq!(
        value(
            &first,
            &format!(
                "loadtest_stage_requests{{stage=\"2:1s\",stage_index=\"0\",scenario=\"{name}\"}}"
            )
        ),
        requests
    );
}
