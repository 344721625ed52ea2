//! The HTML report in a real browser: headless Chromium (Debian's
//! `chromium`, installed by `.ci/run`, which sets
//! `LOADTEST_REQUIRE_CHROMIUM`) loads a report written by a run against
//! the mock, with name resolution disabled. Every chart must survive the
//! browser's parser, the page must ask for nothing, and a screenshot is
//! kept in `target/` with its path printed. Skipped, saying so, where
//! Chromium is not installed.

mod common;

use common::cli::{bin, files_with_prefix, serial, temp_dir};
use std::path::Path;
use std::process::Command;

/// Chromium's own background services, which a page cannot cause.
const BROWSER_OWN: &[&str] = &["google.com", "googleapis.com", "gvt1.com", "gstatic.com"];

fn chromium(args: &[&str], page: &Path) -> Option<std::process::Output> {
    let url = format!("file://{}", page.display());
    let mut command = Command::new("chromium");
    command.args([
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-extensions",
        "--host-resolver-rules=MAP * ~NOTFOUND",
    ]);
    command.args(args).arg(url);
    match command.output() {
        Ok(output) => Some(output),
        Err(_) => {
            assert!(
                std::env::var_os("LOADTEST_REQUIRE_CHROMIUM").is_none(),
                "chromium is required here but not installed"
            );
            eprintln!("skipped: chromium is not installed (CI installs it)");
            None
        }
    }
}

#[test]
fn the_html_report_renders_in_a_browser_and_asks_for_nothing() {
    let _serial = serial();
    let dir = temp_dir("browser");
    let out = dir.join("runs");
    let run = bin()
        .args(["run", "--config"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/profiles/realistic.json"
        ))
        .args([
            "--mock",
            "--stages",
            "4:1s,@100:1s",
            "--warmup",
            "0s",
            "--quiet",
        ])
        .args(["--mock-ttft", "10ms", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(run.status.code().is_some_and(|c| c <= 1), "{run:?}");
    let page = files_with_prefix(&out, "report-")
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "html"))
        .unwrap();
    let source = std::fs::read_to_string(&page).unwrap();
    let net_log = dir.join("net.json");
    let net_flag = format!("--log-net-log={}", net_log.display());
    let Some(dom) = chromium(&["--dump-dom", &net_flag], &page) else {
        return;
    };
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    // Every chart survived the browser's parser, with its lines.
    assert_eq!(dom.matches("<svg").count(), source.matches("<svg").count());
    assert!(dom.matches("<polyline").count() >= 4, "{dom}");
    // The page asked for nothing: every URL in the browser's network log
    // is the page itself or one of the browser's own services.
    let log = std::fs::read_to_string(&net_log).unwrap_or_default();
    for url in log
        .split("\"url\":\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
    {
        let own = BROWSER_OWN.iter().any(|host| url.contains(host));
        assert!(
            url.starts_with("file://") || own,
            "the page asked for {url}"
        );
    }
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-screenshot.png");
    let shot_flag = format!("--screenshot={}", shot.display());
    let taken = chromium(&[&shot_flag, "--window-size=1000,1400"], &page).unwrap();
    assert!(taken.status.success() && shot.exists());
    eprintln!("screenshot of the HTML report: {}", shot.display());
}
