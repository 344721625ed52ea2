//! The OpenAI Responses API end to end on loopback: the adapter against the
//! built-in mock's `/v1/responses`, streamed and not, both history modes,
//! and mixed with the other protocols in one run.

mod common;

use loadtest::config;
use loadtest::engine::{self, RunResult};
use loadtest::mock::Delay;
use loadtest::plan::{self, Overrides, Plan};
use loadtest::results::StageMetrics;
use std::io::{Read, Write};
use std::time::Duration;

use common::{cpus, start_mock};

fn plan(profile: &str, target: std::net::SocketAddr) -> Plan {
    let profile = config::parse(profile).expect("profile parses");
    let overrides = Overrides {
        target: Some(format!("http://{target}")),
        ..Overrides::default()
    };
    plan::build(&profile, &overrides, cpus().0).expect("plan builds")
}

fn run(plan: &Plan) -> RunResult {
    let result = engine::run(plan, |_| {}).expect("run completes");
    assert!(result.stop.is_none(), "stopped: {:?}", result.stop);
    result
}

fn all(result: &RunResult) -> StageMetrics {
    let mut m = StageMetrics::new();
    for stage in &result.stages {
        m.merge(&stage.total.metrics);
    }
    m
}

#[test]
fn streamed_and_whole_replies_count_exactly() {
    let mock = start_mock(|c| c.ttft = Delay::Fixed(Duration::from_millis(30)));
    let plan = plan(
        r#"{"stages":"2:400ms","defaults":{"protocol":"openai-responses","max_tokens":9},
            "scenarios":[{"name":"s","stream":true},{"name":"w","stream":false}]}"#,
        mock.addr(),
    );
    let result = run(&plan);
    let served = mock.stop().expect("the mock shut down cleanly");
    let m = all(&result);
    assert_eq!(m.errors_total(), 0, "{:?}", m.error_counts());
    assert_eq!(m.requests + m.warmup_requests, served.chat_responses);
    assert_eq!(m.completion_tokens, served.completion_tokens);
    assert_eq!(m.prompt_tokens, served.prompt_tokens);
    assert_eq!(m.usage_missing, 0);
    assert_eq!(m.sequence_gaps, 0);
    let streamed = &result.stages[0].scenarios[0].metrics;
    assert!(streamed.ok > 0);
    // Nine deltas per reply, each carrying text.
    assert_eq!(streamed.content_events, 9 * streamed.ok);
    // The head and the opening events come at once; text only after the
    // mock's 30 ms.
    let ttft = streamed.ttft.percentile_ms(0.0).unwrap();
    assert!(ttft >= 30.0, "ttft {ttft}");
    assert!(streamed.ttfb.percentile_ms(50.0).unwrap() < 30.0);
    assert_eq!(result.stages[0].scenarios[1].metrics.ttft.count(), 0);
}

/// Mean prompt tokens (server usage) per turn, turns 1..=3.
fn prompt_per_turn(result: &RunResult) -> Vec<f64> {
    let m = all(result);
    (0..3)
        .map(|t| m.turns[t].mean_prompt_tokens().expect("every turn ran"))
        .collect()
}

#[test]
fn three_turns_resent_or_kept_by_the_server() {
    let mock = start_mock(|c| c.tokens = Some(40));
    let profile = |history: &str| {
        format!(
            r#"{{"stages":"2:600ms","defaults":{{"protocol":"openai-responses","turns":3,
                "max_tokens":64,"stream":true,"history":"{history}"}}}}"#
        )
    };
    let resent = run(&plan(&profile("resend"), mock.addr()));
    let kept = run(&plan(&profile("previous_response_id"), mock.addr()));
    let served = mock.stop().expect("the mock shut down cleanly");
    for result in [&resent, &kept] {
        let m = all(result);
        assert_eq!(m.errors_total(), 0, "{:?}", m.error_counts());
        assert!(m.conversations_completed > 0);
    }
    // Resending, each turn's prompt holds the replies so far (40 tokens
    // each); kept on the server, each request holds only its new message
    // (an unknown previous_response_id would be a 404).
    let (r, k) = (prompt_per_turn(&resent), prompt_per_turn(&kept));
    assert!(r[2] > r[1] + 35.0 && r[1] > r[0] + 35.0, "resent {r:?}");
    assert!(k[1] < k[0] && (k[2] - k[1]).abs() < 5.0, "kept {k:?}");
    let (a, b) = (all(&resent), all(&kept));
    assert_eq!(
        a.requests + a.warmup_requests + b.requests + b.warmup_requests,
        served.chat_responses
    );
}

#[test]
fn history_on_the_server_needs_the_responses_protocol() {
    let profile = config::parse(
        r#"{"stages":"1:1s","defaults":{"target":"http://127.0.0.1:1","history":"previous_response_id"}}"#,
    )
    .unwrap();
    let err = plan::build(&profile, &Overrides::default(), cpus().0).unwrap_err();
    assert!(
        err.starts_with("defaults.history:") && err.contains("openai-responses"),
        "{err}"
    );
}

#[test]
fn an_unknown_previous_response_is_a_404_from_the_mock() {
    let mock = start_mock(|_| {});
    let body = br#"{"model":"m","input":"hi","previous_response_id":"resp_mock_0_999999999"}"#;
    let mut stream = std::net::TcpStream::connect(mock.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    mock.stop().expect("the mock shut down cleanly");
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains("previous_response_not_found"), "{answer}");
}

#[test]
fn mixed_with_chat_and_messages_in_one_run() {
    let mock = start_mock(|c| c.tokens = Some(8));
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/profiles/cross-ingress.json"
    ))
    .unwrap();
    let mut profile = config::parse(&text).unwrap();
    profile.stages = Some(serde_json::json!("3:500ms"));
    profile.warmup = None;
    let overrides = Overrides {
        target: Some(format!("http://{}", mock.addr())),
        ..Overrides::default()
    };
    let plan = plan::build(&profile, &overrides, cpus().0).unwrap();
    let result = run(&plan);
    let served = mock.stop().expect("the mock shut down cleanly");
    let stage = &result.stages[0];
    assert_eq!(stage.scenarios.len(), 3);
    for s in &stage.scenarios {
        assert!(s.metrics.ok > 0, "{}", s.name);
        assert_eq!(
            s.metrics.errors_total(),
            0,
            "{}: {:?}",
            s.name,
            s.metrics.error_counts()
        );
    }
    let m = all(&result);
    assert_eq!(m.requests + m.warmup_requests, served.chat_responses);
    assert_eq!(m.completion_tokens, served.completion_tokens);
}

/// The official `openai` and `anthropic` Python SDKs against `loadtest
/// mock`: when `LOADTEST_SDK_PYTHON` names a Python with both installed
/// (CI makes one), each script's calls must work (`tests/sdk`); otherwise
/// the test says why it did not run.
#[test]
fn the_official_sdks_talk_to_the_mock() {
    let Some(python) = std::env::var_os("LOADTEST_SDK_PYTHON") else {
        eprintln!("skipped: LOADTEST_SDK_PYTHON is not set (CI installs the SDKs and sets it)");
        return;
    };
    let mock = start_mock(|_| {});
    let v1 = format!("http://{}/v1", mock.addr());
    let root = format!("http://{}", mock.addr());
    for (script, base) in [
        ("responses.py", &v1),
        ("chat.py", &v1),
        ("anthropic_messages.py", &root),
    ] {
        let path = format!("{}/tests/sdk/{script}", env!("CARGO_MANIFEST_DIR"));
        let output = std::process::Command::new(&python)
            .arg(&path)
            .arg(base)
            .output()
            .expect("python runs");
        assert!(
            output.status.success(),
            "{script}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("sdk ok"),
            "{script}"
        );
    }
    mock.stop().expect("the mock shut down cleanly");
}
