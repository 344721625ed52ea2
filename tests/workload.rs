//! Scenarios, conversations, content modes and both protocols, end to end
//! on loopback: against the built-in mock, and against a recording gateway
//! that keeps every request so the bytes the generator sent can be checked.
//!
//! Every load loop is bounded by a short stage (under a second) and a few
//! users; think times in the shipped profiles are removed so conversations
//! fit in the stage.

mod common;

use loadtest::config;
use loadtest::engine::{self, RunResult};
use loadtest::mock::Delay;
use loadtest::plan::{self, Overrides, Plan};
use loadtest::results::ErrorClass;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{cpus, start_mock};

fn build(profile: &config::Profile, target: std::net::SocketAddr, extra: Overrides) -> Plan {
    let overrides = Overrides {
        target: Some(format!("http://{target}")),
        ..extra
    };
    plan::build(profile, &overrides, cpus().0).expect("plan builds")
}

fn plan_to(profile: &str, target: std::net::SocketAddr) -> Plan {
    build(
        &config::parse(profile).expect("profile parses"),
        target,
        Overrides::default(),
    )
}

fn run(plan: &Plan) -> RunResult {
    let result = engine::run(plan, |_| {}).expect("run completes");
    assert!(result.stop.is_none(), "stopped: {:?}", result.stop);
    result
}

/// One request as the gateway received it.
#[derive(Debug, Clone)]
struct Captured {
    path: String,
    headers: BTreeMap<String, String>,
    body: Value,
}

/// A keep-alive HTTP/1.1 server that records every request and answers
/// with a fixed non-streamed reply in the format its path asks for. The
/// reply text is `reply-N` (N counts requests) so a test can see which
/// answer came back in a later turn's history.
fn recording_gateway() -> (std::net::SocketAddr, Arc<Mutex<Vec<Captured>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let shared = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(stream) = stream else { continue };
            let log = shared.clone();
            std::thread::spawn(move || serve_recorded(stream, &log));
        }
    });
    (addr, log)
}

fn serve_recorded(mut stream: std::net::TcpStream, log: &Mutex<Vec<Captured>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        // One request: head, then Content-Length bytes of body.
        let (head_end, length) = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        n.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    break (end, length);
                }
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.lines();
        let path = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or("")
            .to_string();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let body: Value =
            serde_json::from_slice(&buf[head_end + 4..head_end + 4 + length]).unwrap_or_default();
        buf.drain(..head_end + 4 + length);
        let n = {
            let mut log = log.lock().unwrap();
            log.push(Captured {
                path: path.clone(),
                headers,
                body,
            });
            log.len()
        };
        let text = format!("reply-{n}");
        let response = if path.ends_with("/messages") {
            serde_json::json!({"type":"message","content":[{"type":"text","text":text}],
                "stop_reason":"end_turn","usage":{"input_tokens":5,"output_tokens":1}})
        } else {
            serde_json::json!({"choices":[{"message":{"role":"assistant","content":text},
                "finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1}})
        }
        .to_string();
        let out = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{response}",
            response.len()
        );
        if stream.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}

/// The `content` strings of a captured body's messages, with roles.
fn messages(body: &Value) -> Vec<(String, String)> {
    body["messages"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|m| {
                    (
                        m["role"].as_str().unwrap_or("").to_string(),
                        m["content"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A request id (`<conversation UUID>-t<turn>`) as its two parts.
fn split_request_id(id: &str) -> (String, u64) {
    let (conv, turn) = id.rsplit_once("-t").expect("a request id ends in -t<turn>");
    (conv.to_string(), turn.parse().expect("a turn number"))
}

/// Requests grouped by conversation (from x-request-id), in arrival order.
fn conversations(log: &[Captured]) -> Vec<Vec<Captured>> {
    let mut order: Vec<String> = Vec::new();
    let mut by_id: BTreeMap<String, Vec<Captured>> = BTreeMap::new();
    for c in log {
        let header = c.headers.get("x-request-id").cloned().unwrap_or_default();
        let id = split_request_id(&header).0;
        if !by_id.contains_key(&id) {
            order.push(id.clone());
        }
        by_id.entry(id).or_default().push(c.clone());
    }
    order
        .into_iter()
        .map(|id| by_id.remove(&id).unwrap())
        .collect()
}

#[test]
fn multi_turn_conversations_feed_replies_back() {
    let (addr, log) = recording_gateway();
    let plan = plan_to(
        r#"{"defaults":{"system":"be brief","model":"m"},"stages":"2:400ms","seed":7,
            "scenarios":[{"name":"chat","turns":3,
              "content":{"mode":"scripted","script":["first question","second question","third question"]}}]}"#,
        addr,
    );
    let result = run(&plan);
    let log = log.lock().unwrap().clone();
    let m = &result.stages[0].total.metrics;
    assert_eq!(m.errors_total(), 0, "{:?}", m.error_counts());
    assert!(
        m.conversations_completed >= 2,
        "{}",
        m.conversations_completed
    );
    let convs = conversations(&log);
    let mut ids = std::collections::HashSet::new();
    for conv in convs.iter().filter(|c| c.len() == 3) {
        // Each turn has its own request id: the conversation's UUID and
        // the turn's number.
        let turns: Vec<(String, u64)> = conv
            .iter()
            .map(|c| split_request_id(&c.headers["x-request-id"]))
            .collect();
        assert_eq!(turns.iter().map(|t| t.1).collect::<Vec<_>>(), [1, 2, 3]);
        let id = turns[0].0.clone();
        assert!(ids.insert(id.clone()), "UUID {id} reused");
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
        let last = messages(&conv[2].body);
        assert_eq!(conv[2].body["messages"][0]["role"], "system");
        let roles: Vec<&str> = last.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(
            roles,
            ["system", "user", "assistant", "user", "assistant", "user"]
        );
        // cache_mode bust: the UUID leads the first user message only.
        assert_eq!(last[1].1, format!("[{id}] first question"));
        assert_eq!(last[3].1, "second question");
        assert_eq!(last[5].1, "third question");
        // The replies fed back are the ones this conversation received.
        assert!(last[2].1.starts_with("reply-") && last[4].1.starts_with("reply-"));
        assert_ne!(last[2].1, last[4].1);
        // Each turn resends the previous turn's messages unchanged.
        for turn in 1..3 {
            let before = messages(&conv[turn - 1].body);
            let now = messages(&conv[turn].body);
            assert_eq!(&now[..before.len()], &before[..]);
            assert_eq!(now.len(), before.len() + 2);
        }
    }
    assert!(
        ids.len() >= 2,
        "too few complete conversations: {}",
        ids.len()
    );
    // Per-turn rows: three turns, each with requests.
    let rows = m.turn_rows();
    assert_eq!(rows.len(), 3, "{rows:?}");
}

#[test]
fn anthropic_requests_have_the_messages_shape() {
    let (addr, log) = recording_gateway();
    let profile = config::parse(
        r#"{"defaults":{"protocol":"anthropic","system":"sys","model":"claude-x","max_tokens":9},
            "stages":"1:300ms","scenarios":[{"name":"a","turns":2,"content":{"script":["q1","q2"]}}]}"#,
    )
    .unwrap();
    let plan = build(
        &profile,
        addr,
        Overrides {
            vk: Some("sk-test".into()),
            headers: vec![("X-Route".into(), "r1".into())],
            ..Overrides::default()
        },
    );
    let result = run(&plan);
    assert_eq!(result.stages[0].total.metrics.errors_total(), 0);
    let log = log.lock().unwrap().clone();
    assert!(log.len() >= 2);
    let second = log.iter().find(|c| messages(&c.body).len() == 3).unwrap();
    assert_eq!(second.path, "/v1/messages");
    assert_eq!(second.headers["x-api-key"], "sk-test");
    assert_eq!(second.headers["anthropic-version"], "2023-06-01");
    assert_eq!(second.headers["x-route"], "r1");
    assert!(!second.headers.contains_key("authorization"));
    assert_eq!(second.body["system"], "sys");
    assert_eq!(second.body["model"], "claude-x");
    assert_eq!(second.body["max_tokens"], 9);
    let m = messages(&second.body);
    assert_eq!(m[0].0, "user");
    assert_eq!(m[1].0, "assistant");
    assert_eq!(m[2], ("user".to_string(), "q2".to_string()));
}

#[test]
fn content_modes_and_cache_modes_shape_the_prompt() {
    // pool + natural: prompts sent exactly as written, header still set.
    let (addr, log) = recording_gateway();
    run(&plan_to(
        r#"{"stages":"1:200ms","cache_mode":"natural",
            "defaults":{"content":{"prompts":["alpha","beta"]}}}"#,
        addr,
    ));
    let log = log.lock().unwrap().clone();
    assert!(log.len() > 4);
    for c in &log {
        let text = &messages(&c.body)[0].1;
        assert!(text == "alpha" || text == "beta", "{text}");
        assert!(c.headers.contains_key("x-request-id"));
    }
    assert!(log.iter().any(|c| messages(&c.body)[0].1 == "beta"));

    // sized: about 4 bytes per token, different text per request.
    let (addr, log) = recording_gateway();
    run(&plan_to(
        r#"{"stages":"1:200ms","correlation":{"header":"X-Trace"},
            "defaults":{"content":{"mode":"sized","approx_input_tokens":300}}}"#,
        addr,
    ));
    let log = log.lock().unwrap().clone();
    assert!(log.len() > 4);
    let texts: Vec<String> = log.iter().map(|c| messages(&c.body)[0].1.clone()).collect();
    for (c, text) in log.iter().zip(&texts) {
        assert!((1150..1300).contains(&text.len()), "{}", text.len());
        let (id, _) = split_request_id(&c.headers["x-trace"]);
        assert!(text.starts_with(&format!("[{id}] ")));
    }
    let distinct: std::collections::HashSet<_> =
        texts.iter().map(|t| t[39..].to_string()).collect();
    assert!(distinct.len() > 1, "sized text never varied");

    // shared-prefix: one preamble for every conversation, UUID after it.
    let (addr, log) = recording_gateway();
    run(&plan_to(
        r#"{"stages":"1:200ms","cache_mode":"shared-prefix","shared_prefix_tokens":100,
            "defaults":{"content":{"prompts":["q"]}}}"#,
        addr,
    ));
    let log = log.lock().unwrap().clone();
    let first = messages(&log[0].body)[0].1.clone();
    let preamble = &first[..first.find('[').unwrap()];
    assert!(preamble.len() >= 350, "{}", preamble.len());
    for c in &log {
        let text = &messages(&c.body)[0].1;
        let (id, turn) = split_request_id(&c.headers["x-request-id"]);
        assert_eq!(turn, 1);
        assert_eq!(*text, format!("{preamble}[{id}] q"));
    }
}

#[test]
fn a_seed_reproduces_the_content_choices() {
    let texts = || {
        let (addr, log) = recording_gateway();
        run(&plan_to(
            r#"{"stages":"1:200ms","cache_mode":"natural","seed":42,
                "defaults":{"content":{"prompts":["a","b","c","d","e","f","g","h"]}}}"#,
            addr,
        ));
        let log = log.lock().unwrap().clone();
        log.iter()
            .map(|c| messages(&c.body)[0].1.clone())
            .collect::<Vec<_>>()
    };
    let (a, b) = (texts(), texts());
    let n = a.len().min(b.len());
    assert!(n > 10, "too few requests to compare: {n}");
    assert_eq!(a[..n], b[..n]);
}

/// Loads a shipped profile with think times removed, so a short stage
/// still completes conversations.
fn shipped(name: &str) -> config::Profile {
    let path = format!("{}/profiles/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut profile = config::parse(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    profile.think_time = None;
    profile.defaults.think_time = None;
    for s in profile.scenarios.iter_mut().flatten() {
        s.think_time = None;
    }
    profile
}

fn quick(stages: &str) -> Overrides {
    Overrides {
        stages: Some(stages.into()),
        warmup: Some("0s".into()),
        vk: Some("test-key".into()),
        ..Overrides::default()
    }
}

#[test]
fn every_shipped_profile_runs_against_the_mock() {
    let dir = format!("{}/profiles", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    for required in [
        "realistic.json",
        "ai-gateway.json",
        "cross-ingress.json",
        "perf-128-nonstream.json",
        "perf-128-stream.json",
        "perf-550-nonstream.json",
        "perf-550-stream.json",
        "perf-hotpath-nonstream.json",
        "perf-hotpath-stream.json",
    ] {
        assert!(names.iter().any(|n| n == required), "{required} missing");
    }
    let mock = start_mock(|_| {});
    for name in &names {
        let profile = shipped(name);
        let text = std::fs::read_to_string(format!("{dir}/{name}")).unwrap();
        assert!(
            text.contains("REPLACE_WITH_VK"),
            "{name}: no key placeholder"
        );
        assert!(
            text.contains("localhost"),
            "{name}: target is not localhost"
        );
        let users = 2 * profile.scenarios.as_ref().map_or(1, Vec::len);
        let plan = build(&profile, mock.addr(), quick(&format!("{users}:300ms")));
        let result = run(&plan);
        for (scenario, stats) in plan.scenarios.iter().zip(&result.stages[0].scenarios) {
            let m = &stats.metrics;
            assert!(m.ok > 0, "{name}/{}: nothing succeeded", scenario.name);
            assert_eq!(
                m.errors_total(),
                0,
                "{name}/{}: {:?}",
                scenario.name,
                m.error_counts()
            );
            assert_eq!(m.usage_missing, 0, "{name}/{}", scenario.name);
            if scenario.stream {
                assert_eq!(m.ttft.count(), m.ok, "{name}/{}", scenario.name);
                assert!(m.itl.count() > 0, "{name}/{}", scenario.name);
            }
            // The mock follows max_tokens, so output size is the profile's.
            assert_eq!(
                m.completion_tokens,
                m.ok * u64::from(scenario.max_tokens),
                "{name}/{}",
                scenario.name
            );
            if let loadtest::plan::Content::Sized(tokens) = scenario.content {
                let mean = m.prompt_tokens as f64 / m.ok as f64;
                let want = tokens as f64;
                assert!(
                    (want * 0.97..want * 1.08 + 20.0).contains(&mean),
                    "{name}: {mean} prompt tokens for ~{tokens}"
                );
            }
        }
    }
    mock.stop().expect("the mock shut down cleanly");
}

#[test]
fn realistic_context_grows_with_the_turn() {
    let mock = start_mock(|_| {});
    let plan = build(&shipped("realistic.json"), mock.addr(), quick("20:800ms"));
    let result = run(&plan);
    let served = mock.stop().expect("the mock shut down cleanly");
    let stage = &result.stages[0];
    assert_eq!(
        stage.total.metrics.errors_total(),
        0,
        "{:?}",
        stage.total.metrics.error_counts()
    );
    assert_eq!(
        stage.total.metrics.completion_tokens,
        served.completion_tokens
    );
    for (scenario, stats) in plan.scenarios.iter().zip(&stage.scenarios) {
        let m = &stats.metrics;
        let rows = m.turn_rows();
        assert!(!rows.is_empty(), "{}", scenario.name);
        if scenario.single_turn() {
            assert_eq!(rows.len(), 1);
            continue;
        }
        // Every turn reached, and the prompt grows with each one by at
        // least the previous reply (max_tokens, as the mock answers).
        assert_eq!(rows.len() as u64, scenario.turns.1, "{}", scenario.name);
        for pair in rows.windows(2) {
            let before = pair[0].1.mean_prompt_tokens().unwrap();
            let after = pair[1].1.mean_prompt_tokens().unwrap();
            assert!(
                after > before + f64::from(scenario.max_tokens) * 0.9,
                "{}: turn {} {before} -> turn {} {after}",
                scenario.name,
                pair[0].0,
                pair[1].0
            );
        }
        assert!(m.ttft.count() > 0 && m.itl.count() > 0, "{}", scenario.name);
    }
    // The blend: users were split 55/30/15 of 20 → 11/6/3.
    assert_eq!(plan.split_users(20), vec![11, 6, 3]);
    let summary = loadtest::results::RunSummary::new(
        loadtest::results::PlanInfo::of(&plan),
        result,
        loadtest::results::Host::default(),
    );
    let text = loadtest::report::text::turn_table(&summary);
    assert!(
        text.contains("medium") && text.contains("complex"),
        "{text}"
    );
}

#[test]
fn openai_and_anthropic_mix_in_one_run() {
    let mock = start_mock(|c| {
        c.ttft = Delay::Fixed(Duration::from_millis(5));
        c.itl = Delay::Fixed(Duration::from_millis(1));
    });
    let plan = build(
        &shipped("cross-ingress.json"),
        mock.addr(),
        quick("4:500ms"),
    );
    assert_eq!(plan.scenarios[1].protocol.name(), "anthropic");
    let result = run(&plan);
    let served = mock.stop().expect("the mock shut down cleanly");
    let stage = &result.stages[0];
    for (scenario, stats) in plan.scenarios.iter().zip(&stage.scenarios) {
        let m = &stats.metrics;
        assert!(m.ok > 0, "{}", scenario.name);
        assert_eq!(
            m.errors_total(),
            0,
            "{}: {:?}",
            scenario.name,
            m.error_counts()
        );
        assert_eq!(m.ttft.count(), m.ok);
        assert!(m.ttft.min_ms().unwrap() >= 5.0);
        assert_eq!(m.content_events, m.ok * u64::from(scenario.max_tokens));
    }
    let m = &stage.total.metrics;
    assert_eq!(m.requests + m.warmup_requests, served.chat_responses);
    assert_eq!(m.completion_tokens, served.completion_tokens);
    assert_eq!(m.prompt_tokens, served.prompt_tokens);
}

fn anthropic_with_headers(headers: &str, stream: bool) -> loadtest::results::StageSummary {
    let mock = start_mock(|c| c.tokens = Some(6));
    let plan = plan_to(
        &format!(
            r#"{{"defaults":{{"protocol":"anthropic","stream":{stream},"headers":{headers}}},"stages":"2:300ms"}}"#
        ),
        mock.addr(),
    );
    let result = run(&plan);
    mock.stop().expect("the mock shut down cleanly");
    result.stages.into_iter().next().unwrap()
}

#[test]
fn anthropic_streams_are_validated() {
    let ok = anthropic_with_headers("{}", true);
    let m = &ok.total.metrics;
    assert!(m.ok > 0);
    assert_eq!(m.errors_total(), 0, "{:?}", m.error_counts());
    assert_eq!(m.content_events, 6 * m.ok);
    // message_start, block start, ping, 6 deltas, block stop, delta, stop
    assert_eq!(m.sse_events, 12 * m.ok);
    assert_eq!(m.completion_tokens, 6 * m.ok);
    assert!(m.prompt_tokens > 0);

    let cut = anthropic_with_headers(r#"{"x-mock-fault":"truncate"}"#, true);
    let m = &cut.total.metrics;
    assert!(m.requests > 0);
    assert_eq!(
        m.error_counts(),
        vec![(ErrorClass::TruncatedStream, m.requests)]
    );

    let error = anthropic_with_headers(r#"{"x-mock-fault":"error-event"}"#, true);
    let m = &error.total.metrics;
    assert_eq!(
        m.error_counts(),
        vec![(ErrorClass::StreamErrorEvent, m.requests)]
    );

    let limited = anthropic_with_headers(r#"{"x-mock-status":"429"}"#, false);
    let m = &limited.total.metrics;
    assert_eq!(m.error_counts(), vec![(ErrorClass::Http429, m.requests)]);
    assert_eq!(m.retry_after_s_max, Some(1));

    let plain = anthropic_with_headers("{}", false);
    let m = &plain.total.metrics;
    assert_eq!(m.errors_total(), 0);
    assert_eq!(m.completion_tokens, 6 * m.ok);
    assert_eq!(m.ttft.count(), 0);
}

#[test]
fn a_failed_turn_ends_the_conversation() {
    // Every request fails, so every conversation ends at its first turn.
    let mock = start_mock(|c| c.tokens = Some(3));
    let plan = plan_to(
        r#"{"defaults":{"headers":{"x-mock-status":"500"}},"stages":"2:300ms",
            "scenarios":[{"name":"chat","turns":4}]}"#,
        mock.addr(),
    );
    let result = run(&plan);
    mock.stop().expect("the mock shut down cleanly");
    let m = &result.stages[0].total.metrics;
    assert!(m.requests > 0);
    assert_eq!(m.conversations_failed, m.requests);
    assert_eq!(m.conversations_started, m.requests);
    assert_eq!(m.conversations_completed, 0);
    assert_eq!(m.turn_rows().len(), 1, "no second turn after a failure");
}

#[test]
fn a_reply_too_long_for_the_history_ends_its_conversation_counted() {
    // 800,000 tokens of about 5.7 bytes: a streamed reply past the 4 MiB a
    // history keeps.
    let mock = start_mock(|c| c.tokens = Some(800_000));
    let plan = plan_to(
        r#"{"stages":"1:500ms","warmup":"0s",
            "defaults":{"stream":true,"turns":2,"max_tokens":1000000}}"#,
        mock.addr(),
    );
    let result = run(&plan);
    mock.stop().unwrap();
    let m = &result.stages[0].total.metrics;
    assert_eq!(m.errors_total(), 0, "{:?}", m.error_counts());
    assert!(m.ok >= 1);
    assert!(
        m.content_bytes > loadtest::limits::BODY_BYTES_MAX as u64,
        "{} content bytes, {} ok, completion {}",
        m.content_bytes,
        m.ok,
        m.completion_tokens
    );
    // Every conversation ended after its first turn, and said why.
    assert_eq!(m.turns[1].requests, 0);
    assert_eq!(m.context_limit, m.conversations_started);
}
