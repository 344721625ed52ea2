//! Planted secrets never reach an output or a message: every header value
//! but a few harmless ones (and the profile's `public_headers`) is masked,
//! and every query value of a target URL. Checked by grepping stdout,
//! stderr and every file a run writes.

mod common;

use common::cli::{bin, serial, temp_dir, write};
use std::path::Path;
use std::process::Output;

/// Each secret is long enough that a masked value (its last four
/// characters) can never contain it.
const SECRETS: &[&str] = &[
    "SECRETCOOKIE1-aaaa",
    "SECRETPROXY1-bbbb",
    "SECRETAPIM1-cccc",
    "SECRETAUTH1-dddd",
    "SECRETVK1-eeee",
    "SECRETBEARER1-ffff",
    "SECRETQUERY1-gggg",
    "SECRETCLI1-hhhh",
];

fn profile(dir: &Path, target: &str) -> std::path::PathBuf {
    let text = format!(
        r#"{{"stages":"1:300ms","warmup":"0s","public_headers":["X-Route"],
        "defaults":{{"target":"{target}?api_key=SECRETQUERY1-gggg&x=2","stream":false,"max_tokens":4,
        "headers":{{"Cookie":"session=SECRETCOOKIE1-aaaa","Proxy-Authorization":"Basic SECRETPROXY1-bbbb",
        "Ocp-Apim-Subscription-Key":"SECRETAPIM1-cccc","X-Auth-Key":"SECRETAUTH1-dddd",
        "X-Portkey-Virtual-Key":"SECRETVK1-eeee","Authorization":"Bearer SECRETBEARER1-ffff",
        "X-Route":"blue-route","anthropic-version":"2023-06-01"}}}}}}"#
    );
    write(dir, "secrets.json", &text)
}

/// Every planted secret absent from `text`, which says where it came from.
fn assert_clean(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret} leaked in {what}:\n{text}");
    }
}

fn assert_output_clean(what: &str, output: &Output) {
    assert_clean(
        &format!("{what} stdout"),
        &String::from_utf8_lossy(&output.stdout),
    );
    assert_clean(
        &format!("{what} stderr"),
        &String::from_utf8_lossy(&output.stderr),
    );
}

#[test]
fn no_planted_secret_reaches_any_output_or_message() {
    let _serial = serial();
    let mock = common::start_mock(|c| c.tokens = Some(4));
    let dir = temp_dir("secrets");
    let out = dir.join("runs");
    let path = profile(&dir, &format!("http://{}/v1/chat/completions", mock.addr()));
    let cli_header = "X-Extra-Key: SECRETCLI1-hhhh";

    let validate = bin()
        .arg("validate")
        .arg(&path)
        .args(["--header", cli_header])
        .output()
        .unwrap();
    assert!(
        validate.status.success(),
        "{}",
        String::from_utf8_lossy(&validate.stderr)
    );
    assert_output_clean("validate", &validate);
    let shown = String::from_utf8_lossy(&validate.stdout);
    // Masked, not dropped; what is harmless or public is shown.
    assert!(shown.contains("Bearer ***ffff"), "{shown}");
    assert!(shown.contains("api_key=***"), "{shown}");
    assert!(
        shown.contains("blue-route") && shown.contains("2023-06-01"),
        "{shown}"
    );

    let run = bin()
        .args(["run", "--config"])
        .arg(&path)
        .args(["--header", cli_header, "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_output_clean("run", &run);
    let files: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 6, "{files:?}");
    for file in files {
        assert_clean(
            &file.display().to_string(),
            &std::fs::read_to_string(&file).unwrap(),
        );
    }
    mock.stop().unwrap();

    // Messages about a target or a flag mask too.
    let unreachable = profile(&dir, "http://127.0.0.1:9/v1/chat/completions");
    let failed = bin().arg("validate").arg(&unreachable).output().unwrap();
    assert_output_clean("validate of an unreachable target", &failed);
    let failed = bin()
        .args(["run", "--config"])
        .arg(&unreachable)
        .output()
        .unwrap();
    assert_eq!(failed.status.code(), Some(2));
    assert_output_clean("run against an unreachable target", &failed);
    let bad_flag = bin()
        .arg("validate")
        .arg(&path)
        .args(["--header", "Bearer SECRETCLI1-hhhh"])
        .output()
        .unwrap();
    assert_eq!(bad_flag.status.code(), Some(2));
    assert_output_clean("a malformed --header", &bad_flag);
    let bad_url = bin()
        .args(["validate", "--target", "ftp://h/v1?key=SECRETQUERY1-gggg"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(bad_url.status.code(), Some(2));
    assert_output_clean("a bad --target", &bad_url);
}
