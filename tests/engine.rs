//! The engine against the built-in mock, in-process, on loopback.
//!
//! Every load loop here is bounded by short stages (well under a second
//! each) and a handful of users. Assertions compare what the generator
//! measured with what the mock says it served, and with the timing the
//! mock was told to produce.

mod common;

use loadtest::config;
use loadtest::engine::{self, RunResult};
use loadtest::mock::{Delay, MockServer, MockStats};
use loadtest::plan::{self, Overrides, Plan};
use loadtest::results::ErrorClass;
use std::time::Duration;

use common::{cpus, start_mock};

fn plan(profile: &str, mock: &MockServer, generator_cpus: Vec<usize>) -> Plan {
    plan_to(profile, mock.addr(), generator_cpus)
}

fn plan_to(profile: &str, target: std::net::SocketAddr, generator_cpus: Vec<usize>) -> Plan {
    let profile = config::parse(profile).expect("profile parses");
    let overrides = Overrides {
        target: Some(format!("http://{target}")),
        ..Overrides::default()
    };
    plan::build(&profile, &overrides, generator_cpus).expect("plan builds")
}

fn run(plan: &Plan) -> RunResult {
    let result = engine::run(plan, |_| {}).expect("run completes");
    assert!(result.stop.is_none(), "stopped: {:?}", result.stop);
    result
}

fn total_requests(result: &RunResult) -> u64 {
    result
        .stages
        .iter()
        .map(|s| s.total.metrics.requests + s.total.metrics.warmup_requests)
        .sum()
}

#[test]
fn closed_loop_counts_match_what_the_mock_served() {
    let mock = start_mock(|c| c.tokens = Some(40));
    let plan = plan(
        r#"{"defaults":{"max_tokens":32,"stream":false},"stages":"2:300ms,6:400ms"}"#,
        &mock,
        loadtest::host::allowed_cpus(),
    );
    let result = run(&plan);
    let served: MockStats = mock.stop().expect("the mock shut down cleanly");
    assert_eq!(result.stages.len(), 2);
    for stage in &result.stages {
        let m = &stage.total.metrics;
        assert!(m.requests > 0, "stage {} sent nothing", stage.index);
        // No false errors at the stage boundary: in-flight requests finish.
        assert_eq!(m.errors_total(), 0, "errors: {:?}", m.error_counts());
        assert_eq!(m.ok, m.requests);
        assert_eq!(m.status_counts(), vec![(200, m.requests)]);
        assert_eq!(m.latency.count(), m.requests);
        assert_eq!(m.ttft.count(), 0, "non-stream responses have no TTFT");
        assert_eq!(m.ttfb.count(), m.requests);
    }
    assert_eq!(total_requests(&result), served.chat_responses);
    let tokens: u64 = result
        .stages
        .iter()
        .map(|s| s.total.metrics.completion_tokens)
        .sum();
    assert_eq!(tokens, served.completion_tokens);
    // max_tokens (32) caps the mock's 40 tokens.
    assert_eq!(served.completion_tokens, 32 * served.chat_responses);
    let prompt: u64 = result
        .stages
        .iter()
        .map(|s| s.total.metrics.prompt_tokens)
        .sum();
    assert_eq!(prompt, served.prompt_tokens);
}

#[test]
fn streaming_ttft_and_itl_follow_the_mock() {
    let ttft = Duration::from_millis(30);
    let itl = Duration::from_millis(5);
    let mock = start_mock(|c| {
        c.ttft = Delay::Fixed(ttft);
        c.itl = Delay::Fixed(itl);
        c.tokens = Some(10);
    });
    let plan = plan(
        r#"{"defaults":{"max_tokens":100,"stream":true},"stages":"3:600ms"}"#,
        &mock,
        cpus().0,
    );
    let result = run(&plan);
    let served = mock.stop().expect("the mock shut down cleanly");
    let m = &result.stages[0].total.metrics;
    assert!(m.ok > 0);
    assert_eq!(m.errors_total(), 0, "errors: {:?}", m.error_counts());
    assert_eq!(m.requests, served.chat_responses);
    assert_eq!(m.completion_tokens, served.completion_tokens);
    assert_eq!(m.completion_tokens, 10 * m.ok);
    assert_eq!(m.content_events, 10 * m.ok);
    // role chunk + 10 tokens + finish + usage + [DONE]
    assert_eq!(m.sse_events, 14 * m.ok);
    assert_eq!(m.ttft.count(), m.ok);
    assert_eq!(m.itl.count(), 9 * m.ok);
    let ttft_min_ms = m.ttft.min_ms().unwrap();
    assert!(
        ttft_min_ms >= 30.0,
        "TTFT {ttft_min_ms} ms is below the mock's 30 ms"
    );
    let itl_p50 = m.itl.percentile_ms(50.0).unwrap();
    assert!(
        (4.5..25.0).contains(&itl_p50),
        "ITL p50 {itl_p50} ms is not close to the mock's 5 ms"
    );
    // TTFB is the head, sent before the first token's delay.
    assert!(m.ttfb.percentile_ms(50.0).unwrap() < ttft_min_ms);
    // Whole latency covers TTFT and nine gaps.
    assert!(m.latency.min_ms().unwrap() >= 30.0 + 9.0 * 5.0 * 0.9);
}

#[test]
fn two_shards_merge_into_one_stage() {
    let allowed = loadtest::host::allowed_cpus();
    if allowed.len() < 2 {
        return;
    }
    let mock = start_mock(|c| c.tokens = Some(8));
    let plan = plan(
        r#"{"defaults":{"stream":true},"stages":"5:400ms","warmup":"100ms"}"#,
        &mock,
        allowed[..2].to_vec(),
    );
    let result = run(&plan);
    let served = mock.stop().expect("the mock shut down cleanly");
    let stage = &result.stages[0];
    assert_eq!(stage.shard_cpu_s.len(), 2);
    assert_eq!(stage.total.metrics.errors_total(), 0);
    assert_eq!(total_requests(&result), served.chat_responses);
    assert!(stage.total.metrics.warmup_requests > 0);
    // Warm-up requests are in no statistic.
    assert_eq!(
        stage.total.metrics.latency.count(),
        stage.total.metrics.requests
    );
    assert!(stage.connections_open_ok());
}

#[test]
fn a_host_with_several_addresses_gets_connections_on_each_in_turn() {
    // Two mocks stand for two addresses of one name (as a DNS round robin
    // or a dual-stack host gives them).
    let a = start_mock(|c| c.tokens = Some(8));
    let b = start_mock(|c| c.tokens = Some(8));
    let mut plan = plan(r#"{"stages":"4:400ms","warmup":"0s"}"#, &a, cpus().0);
    let (addr_a, addr_b) = (a.addr().to_string(), b.addr().to_string());
    plan.targets[0].addrs = vec![a.addr(), b.addr()];
    let result = run(&plan);
    let (served_a, served_b) = (a.stop().unwrap(), b.stop().unwrap());
    // Four users, four connections, alternating.
    assert_eq!((served_a.connections, served_b.connections), (2, 2));
    let stage = &result.stages[0];
    let by = &stage.requests_by_address;
    let (n_a, n_b) = (by[&addr_a], by[&addr_b]);
    assert_eq!(n_a + n_b, stage.total.metrics.requests);
    assert!(n_a > 0 && n_b > 0, "{by:?}");
    // Each mock answered every request counted for its address.
    assert_eq!(n_a, served_a.chat_responses, "{by:?} {served_a:?}");
    assert_eq!(n_b, served_b.chat_responses, "{by:?} {served_b:?}");
}

trait OpenCheck {
    fn connections_open_ok(&self) -> bool;
}

impl OpenCheck for loadtest::results::StageSummary {
    fn connections_open_ok(&self) -> bool {
        // Five users hold at most five connections between them.
        self.total.metrics.connections_open <= 5 && self.total.metrics.connects >= 1
    }
}

fn run_with_headers(headers: &str, stream: bool, timeout: &str) -> (RunResult, MockStats) {
    let mock = start_mock(|c| c.tokens = Some(6));
    let profile = format!(
        r#"{{"defaults":{{"stream":{stream},"headers":{headers},"timeout":"{timeout}"}},"stages":"2:300ms"}}"#
    );
    let plan = plan(&profile, &mock, cpus().0);
    let result = run(&plan);
    (result, mock.stop().expect("the mock shut down cleanly"))
}

#[test]
fn truncated_streams_are_an_error_class() {
    let (result, _) = run_with_headers(r#"{"x-mock-fault":"truncate"}"#, true, "10s");
    let m = &result.stages[0].total.metrics;
    assert!(m.requests > 0);
    assert_eq!(
        m.error_counts(),
        vec![(ErrorClass::TruncatedStream, m.requests)]
    );
    assert_eq!(m.ok, 0);
}

#[test]
fn error_events_mid_stream_are_an_error_class() {
    let (result, _) = run_with_headers(r#"{"x-mock-fault":"error-event"}"#, true, "10s");
    let m = &result.stages[0].total.metrics;
    assert!(m.requests > 0);
    assert_eq!(
        m.error_counts(),
        vec![(ErrorClass::StreamErrorEvent, m.requests)]
    );
}

#[test]
fn statuses_are_counted_and_429_kept_apart() {
    let (result, _) = run_with_headers(r#"{"x-mock-status":"429"}"#, false, "10s");
    let m = &result.stages[0].total.metrics;
    assert!(m.requests > 0);
    assert_eq!(m.error_counts(), vec![(ErrorClass::Http429, m.requests)]);
    assert_eq!(m.status_counts(), vec![(429, m.requests)]);
    assert_eq!(m.retry_after_s_max, Some(1));
    let (result, _) = run_with_headers(r#"{"x-mock-status":"503"}"#, true, "10s");
    let m = &result.stages[0].total.metrics;
    assert_eq!(m.error_counts(), vec![(ErrorClass::Http5xx, m.requests)]);
    assert_eq!(m.status_counts(), vec![(503, m.requests)]);
}

#[test]
fn connection_close_means_reconnect_without_errors() {
    let (result, served) = run_with_headers(r#"{"x-mock-close":"1"}"#, false, "10s");
    let m = &result.stages[0].total.metrics;
    assert!(m.requests > 1);
    assert_eq!(m.errors_total(), 0, "errors: {:?}", m.error_counts());
    // Every request needed its own connection.
    assert_eq!(m.connects, m.requests + m.warmup_requests);
    assert_eq!(served.connections, m.connects);
}

#[test]
fn slow_responses_time_out_and_are_counted() {
    let (result, _) = run_with_headers(r#"{"x-mock-latency-ms":"5000"}"#, false, "200ms");
    let m = &result.stages[0].total.metrics;
    assert!(m.requests >= 2, "each of 2 users times out at least once");
    assert_eq!(m.error_counts(), vec![(ErrorClass::Timeout, m.requests)]);
}

/// An adapter that panics on every third response, to prove a panic costs
/// one request, not the shard.
static PANICKY: common::Hooked = common::Hooked {
    before_write: || {},
    before_body: panic_every_third,
};

thread_local! {
    static CALLS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn panic_every_third() {
    let n = CALLS.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    if n.is_multiple_of(3) {
        panic!("deliberate test panic");
    }
}

#[test]
fn a_panic_costs_one_request_not_the_shard() {
    let mock = start_mock(|c| c.tokens = Some(4));
    let mut plan = plan(
        r#"{"defaults":{"stream":false},"stages":"2:300ms,2:200ms"}"#,
        &mock,
        cpus().0,
    );
    plan.scenarios[0].protocol = &PANICKY;
    let result = run(&plan);
    let served = mock.stop().expect("the mock shut down cleanly");
    assert_eq!(
        result.stages.len(),
        2,
        "the shard survived into the second stage"
    );
    let mut panics_total = 0;
    for stage in &result.stages {
        let m = &stage.total.metrics;
        let panics = m.error_count(ErrorClass::Panic);
        // The shard kept serving: every stage sent requests.
        assert!(m.requests > 0, "stage {} sent nothing", stage.index);
        assert_eq!(m.errors_total(), panics);
        // One in three panicked.
        assert!(panics * 3 <= m.requests + 3 && panics * 3 + 3 >= m.requests);
        panics_total += panics;
    }
    let ok: u64 = result.stages.iter().map(|s| s.total.metrics.ok).sum();
    assert!(panics_total > 0 && ok > 0, "ok {ok} panics {panics_total}");
    assert_eq!(total_requests(&result), served.chat_responses);
}

#[test]
fn refused_connections_are_counted_without_a_busy_loop() {
    // A port nothing listens on: bind, read the port, close.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let result = run(&plan_to(r#"{"stages":"2:300ms"}"#, closed, cpus().0));
    let m = &result.stages[0].total.metrics;
    assert_eq!(
        m.error_counts(),
        vec![(ErrorClass::ConnRefused, m.requests)]
    );
    // Nothing was received, so nothing may be recorded as received.
    assert_eq!(m.ttfb.count(), 0);
    assert!(m.status_counts().is_empty());
    // 100 ms back-off per user: a handful of attempts, not thousands.
    assert!(
        m.requests >= 2 && m.requests <= 12,
        "{} attempts",
        m.requests
    );
}

#[test]
fn large_bodies_spanning_many_reads_parse() {
    // ~4000 tokens ≈ 30 KB: larger than one 16 KiB read buffer, for both
    // the JSON body path and the SSE path.
    let mock = start_mock(|c| c.tokens = Some(4000));
    for stream in [false, true] {
        let profile =
            format!(r#"{{"defaults":{{"max_tokens":5000,"stream":{stream}}},"stages":"2:300ms"}}"#);
        let plan = plan(&profile, &mock, cpus().0);
        let result = run(&plan);
        let m = &result.stages[0].total.metrics;
        assert!(m.ok > 0, "stream={stream}");
        assert_eq!(
            m.errors_total(),
            0,
            "stream={stream}: {:?}",
            m.error_counts()
        );
        assert_eq!(m.completion_tokens, 4000 * m.ok);
        assert!(m.content_bytes > 16 * 1024 * m.ok);
    }
    mock.stop().expect("the mock shut down cleanly");
}

/// A fake gateway that answers every request with raw bytes: two interim
/// `100 Continue` heads and the final response in one write, then closes.
/// Serves at most `connections` connections, then its thread ends.
fn raw_gateway(response: &'static [u8], connections: usize) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // Read the head and the Content-Length body.
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request);
                if let Some(end) = text.find("\r\n\r\n") {
                    let length: usize = text
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        break;
                    }
                }
            }
            let _ = stream.write_all(response);
        }
    });
    addr
}

/// A gateway that answers the first request on each connection (keep-alive)
/// and closes on the second without answering: every reused connection is
/// stale. Serves at most `connections` connections.
fn answers_once_per_connection(connections: usize) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 8192];
            let mut seen = Vec::new();
            // The first request: head and body (the generator sends both
            // in one write; wait for the body's last byte).
            while !seen.ends_with(b"}") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let body = br#"{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#;
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body);
            // The second request is read and left unanswered.
            let _ = stream.read(&mut buf);
        }
    });
    addr
}

#[test]
fn stale_connections_are_retried_and_counted_or_not_retried() {
    let profile = r#"{"stages":"1:300ms","defaults":{"stream":false}}"#;
    let addr = answers_once_per_connection(100_000);
    let result = run(&plan_to(profile, addr, cpus().0));
    let m = &result.stages[0].total.metrics;
    // Each request after the first met a closed connection and was sent
    // again: all succeeded, and the retries are counted.
    assert!(m.ok > 2, "{m:?}");
    assert_eq!(m.errors_total(), 0, "{:?}", m.error_counts());
    assert!(
        m.stale_retries + 1 >= m.ok,
        "{} retries for {} ok",
        m.stale_retries,
        m.ok
    );
    // With retries off, the same requests fail as closed connections.
    let mut plan = plan_to(profile, answers_once_per_connection(100_000), cpus().0);
    plan.retry_stale = false;
    let result = run(&plan);
    let m = &result.stages[0].total.metrics;
    assert_eq!(m.stale_retries, 0);
    assert!(m.error_count(ErrorClass::Eof) > 0, "{:?}", m.error_counts());
    assert_eq!(m.requests, m.ok + m.errors_total());
}

#[test]
fn interim_responses_are_skipped() {
    let addr = raw_gateway(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 92\r\n\r\n{\"choices\":[{\"message\":{\"content\":\"hi\"}}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}",
        100_000,
    );
    let result = run(&plan_to(r#"{"stages":"1:200ms"}"#, addr, cpus().0));
    let m = &result.stages[0].total.metrics;
    assert!(m.requests > 0);
    assert_eq!(m.errors_total(), 0, "errors: {:?}", m.error_counts());
    assert_eq!(m.status_counts(), vec![(200, m.requests)]);
    assert_eq!(m.completion_tokens, m.requests);
}
