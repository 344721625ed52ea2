//! `loadtest join` end to end: a run against the mock logging its own
//! rows (`--mock-log-requests`), joined on the request id; then the same
//! rows as a gateway's CSV export with its own column names.

mod common;

use common::cli::{bin, files_with_prefix, serial, stderr, temp_dir};

#[test]
fn a_run_joins_with_the_mocks_own_rows() {
    let _serial = serial();
    let dir = temp_dir("join");
    let server = dir.join("server.jsonl");
    let profile = concat!(env!("CARGO_MANIFEST_DIR"), "/profiles/ai-gateway.json");
    let run = bin()
        .args(["run", "--config", profile, "--mock", "--quiet", "--vk", "k"])
        .args([
            "--stages",
            "3:600ms",
            "--warmup",
            "0s",
            "--mock-ttft",
            "2ms",
        ])
        .arg("--mock-log-requests")
        .arg(&server)
        .arg("--out")
        .arg(&*dir)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let results = files_with_prefix(&dir, "results-").remove(0);
    let joined = dir.join("joined.csv");
    let join = bin()
        .arg("join")
        .arg(&results)
        .arg(&server)
        .arg("-o")
        .arg(&joined)
        .output()
        .unwrap();
    assert_eq!(join.status.code(), Some(0), "{}", stderr(&join));
    let table = String::from_utf8(join.stdout).unwrap();
    let client_rows = std::fs::read_to_string(&results).unwrap().lines().count();
    assert!(client_rows > 20, "{client_rows}");
    // Every client row found its server row (the server may have answered
    // a request the stage's end cut on the client side).
    assert!(
        table.contains(&format!("{client_rows} of {client_rows} client rows")),
        "{table}"
    );
    assert!(table.contains("unmatched 0 client"), "{table}");
    assert!(
        table.contains("keys seen twice 0 client, 0 server"),
        "{table}"
    );
    let csv = std::fs::read_to_string(&joined).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|&h| h == name).unwrap();
    let mut rows = 0;
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let client: f64 = f[col("client_latency_ms")].parse().unwrap();
        let server: f64 = f[col("server_latency_ms")].parse().unwrap();
        // The handler's time is inside the client's.
        assert!(client >= server, "{line}");
        assert!(f[col("request_id")].ends_with("-t1"), "{line}");
        rows += 1;
    }
    assert_eq!(rows, client_rows);

    // The same rows as a gateway would export them: CSV, its own names.
    let mut export = String::from("id,duration_ms,note\n");
    for line in std::fs::read_to_string(&server).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        export.push_str(&format!(
            "{},{},\"a, quoted note\"\n",
            v["request_id"].as_str().unwrap(),
            v["latency_ms"]
        ));
    }
    let export_path = dir.join("export.csv");
    std::fs::write(&export_path, export).unwrap();
    let join = bin()
        .arg("join")
        .arg(&results)
        .arg(&export_path)
        .args(["--server-key", "id", "--server-latency", "duration_ms"])
        .output()
        .unwrap();
    assert_eq!(join.status.code(), Some(0), "{}", stderr(&join));
    let table = String::from_utf8(join.stdout).unwrap();
    assert!(table.contains("unmatched 0 client"), "{table}");

    // A key column that is not there: a usage error naming the file.
    let bad = bin()
        .arg("join")
        .arg(&results)
        .arg(&export_path)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("export.csv"), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("--server-key"), "{}", stderr(&bad));
}
