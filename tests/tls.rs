//! TLS end to end on loopback: the engine against the mock serving TLS
//! (exact counts, handshake times, resumption on and off), against hostile
//! TLS servers (garbage after the handshake, a record that does not
//! decrypt mid-stream, a close without `close_notify`, SSE split across
//! records), and the `run` command's trust flags.

mod common;

use common::cli::{bin, serial, stderr, temp_dir, write};
use common::{cpus, start_mock};
use loadtest::config;
use loadtest::engine;
use loadtest::plan::{self, Overrides};
use loadtest::results::ErrorClass;
use loadtest::results::RunResult;
use loadtest::transport::cert::ServerTls;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;

/// Runs `profile` against `target`, trusting `ca_der`.
fn run(profile: &str, target: &str, ca_der: &[u8], tune: impl FnOnce(&mut Overrides)) -> RunResult {
    let profile = config::parse(profile).unwrap();
    let mut overrides = Overrides {
        target: Some(target.to_string()),
        tls_roots: vec![ca_der.to_vec()],
        ..Overrides::default()
    };
    tune(&mut overrides);
    let plan = plan::build(&profile, &overrides, cpus().0).unwrap();
    engine::run(&plan, |_| {}).unwrap()
}

#[test]
fn a_run_over_tls_counts_exactly_and_resumes_sessions() {
    let _serial = serial();
    let tls = ServerTls::self_signed().unwrap();
    let mock = start_mock(|c| {
        c.tokens = Some(16);
        c.tls = Some(tls.config.clone());
    });
    let ca = tls.ca_der.clone().unwrap();
    // A new connection per request: one handshake each, resumed after the
    // first of each user.
    let profile = r#"{"stages":"4:800ms","warmup":"0s","disable_keepalive":true,
                      "defaults":{"stream":true}}"#;
    let target = format!("https://{}", mock.addr());
    let result = run(profile, &target, &ca, |_| {});
    let served = mock.stop().unwrap();
    let m = &result.stages[0].total.metrics;
    assert!(m.requests > 20, "{}", m.requests);
    assert_eq!(m.requests, m.ok, "{:?}", m.error_counts());
    assert_eq!(m.completion_tokens, 16 * m.ok);
    assert_eq!(m.tls_handshakes, m.connects);
    assert_eq!(m.tls.count(), m.connects);
    assert!(m.tls_resumed * 2 > m.tls_handshakes, "{m:?}");
    // The mock saw every counted handshake (and maybe a last one whose
    // request the stage's end cut).
    assert!(served.tls_handshakes >= m.tls_handshakes, "{served:?}");
    assert!(served.tls_resumed >= m.tls_resumed, "{served:?}");
    assert_eq!(served.tls_failed, 0);

    let mock = start_mock(|c| c.tls = Some(tls.config.clone()));
    let target = format!("https://{}", mock.addr());
    let result = run(profile, &target, &ca, |o| o.no_tls_resume = true);
    let served = mock.stop().unwrap();
    let m = &result.stages[0].total.metrics;
    assert!(m.ok > 0 && m.requests == m.ok);
    assert_eq!((m.tls_resumed, served.tls_resumed), (0, 0));
    assert_eq!(m.tls_handshakes, m.connects);
}

#[test]
fn keep_alive_over_tls_handshakes_once_per_connection() {
    let _serial = serial();
    let tls = ServerTls::self_signed().unwrap();
    let mock = start_mock(|c| {
        c.tokens = Some(8);
        c.tls = Some(tls.config.clone());
    });
    let profile = r#"{"stages":"3:500ms","warmup":"0s","defaults":{"stream":false}}"#;
    let target = format!("https://{}", mock.addr());
    let result = run(profile, &target, tls.ca_der.as_deref().unwrap(), |_| {});
    let served = mock.stop().unwrap();
    let m = &result.stages[0].total.metrics;
    assert!(
        m.requests > 30 && m.requests == m.ok,
        "{:?}",
        m.error_counts()
    );
    assert_eq!(m.tls_handshakes, 3);
    assert_eq!(served.connections, 3);
    assert_eq!(served.chat_responses, m.requests);
}

/// What a hostile TLS server does once it has read a request.
#[derive(Clone, Copy)]
enum Hostile {
    /// Bytes that are not TLS records.
    Garbage,
    /// Half a streamed answer, then a plaintext alert record where only
    /// encrypted ones may come.
    AlertMidStream,
    /// Half a streamed answer, then a TCP close with no `close_notify`.
    CloseMidBody,
    /// A whole streamed answer, each few bytes in a TLS record of its own.
    SplitRecords,
}

const EVENT: &str = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hello \"}}]}\n\n";

fn sse_response(events: usize) -> Vec<u8> {
    let mut body = EVENT.repeat(events);
    body.push_str("data: [DONE]\n\n");
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    [head.into_bytes(), body.into_bytes()].concat()
}

/// A TLS server on a loopback port that misbehaves as told on every
/// connection; threads end with the test binary.
fn hostile_server(tls: &ServerTls, behaviour: Hostile) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = tls.config.clone();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || {
                let _ = serve_hostile(tcp, config, behaviour);
            });
        }
    });
    addr
}

fn serve_hostile(
    mut tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    behaviour: Hostile,
) -> std::io::Result<()> {
    let mut conn = rustls::ServerConnection::new(config).unwrap();
    let mut request = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    // Read one request: its head, then Content-Length bytes of body.
    loop {
        conn.complete_io(&mut tcp)?;
        match conn.reader().read(&mut buf) {
            Ok(n) => request.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
        let text = String::from_utf8_lossy(&request);
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if request.len() >= end + 4 + length {
                break;
            }
        }
    }
    let response = sse_response(6);
    let half = response.len() / 2;
    match behaviour {
        Hostile::Garbage => tcp.write_all(b"HTTP/1.1 200 OK\r\n\r\nnot a TLS record")?,
        Hostile::AlertMidStream => {
            conn.writer().write_all(&response[..half])?;
            conn.complete_io(&mut tcp)?;
            // A fatal alert (handshake_failure) as a plaintext record.
            tcp.write_all(&[21, 3, 3, 0, 2, 2, 40])?;
        }
        Hostile::CloseMidBody => {
            conn.writer().write_all(&response[..half])?;
            conn.complete_io(&mut tcp)?;
        }
        Hostile::SplitRecords => {
            for piece in response.chunks(7) {
                conn.writer().write_all(piece)?;
                while conn.wants_write() {
                    conn.write_tls(&mut tcp)?;
                }
            }
            conn.send_close_notify();
            conn.complete_io(&mut tcp)?;
        }
    }
    tcp.flush()?;
    // Drop: the socket closes (no close_notify unless sent above).
    Ok(())
}

fn against_hostile(behaviour: Hostile) -> loadtest::results::StageMetrics {
    let tls = ServerTls::self_signed().unwrap();
    let addr = hostile_server(&tls, behaviour);
    let profile = r#"{"stages":"2:400ms","warmup":"0s","timeout":"2s","disable_keepalive":true,
                      "defaults":{"stream":true}}"#;
    let result = run(
        profile,
        &format!("https://{addr}"),
        tls.ca_der.as_deref().unwrap(),
        |o| o.no_retry = true,
    );
    let m = result.stages[0].total.metrics.clone();
    assert!(m.requests > 0);
    assert_eq!(
        m.requests,
        m.ok + m.errors_total(),
        "{:?}",
        m.error_counts()
    );
    m
}

#[test]
fn hostile_tls_servers_give_classified_errors() {
    let _serial = serial();
    for (behaviour, class) in [
        (Hostile::Garbage, ErrorClass::TlsProtocol),
        (Hostile::AlertMidStream, ErrorClass::TlsProtocol),
        (Hostile::CloseMidBody, ErrorClass::TruncatedStream),
    ] {
        let m = against_hostile(behaviour);
        assert_eq!(m.error_count(class), m.requests, "{:?}", m.error_counts());
    }
}

#[test]
fn sse_split_across_tls_records_is_parsed_whole() {
    let _serial = serial();
    let m = against_hostile(Hostile::SplitRecords);
    assert_eq!(m.ok, m.requests, "{:?}", m.error_counts());
    assert_eq!(m.content_events, 6 * m.ok);
    assert_eq!(m.ttft.count(), m.ok);
}

#[test]
fn the_run_command_verifies_certificates_and_says_when_it_does_not() {
    let _serial = serial();
    let dir = temp_dir("tls-trust");
    let tls = ServerTls::self_signed().unwrap();
    let mock = start_mock(|c| c.tls = Some(tls.config.clone()));
    let port = mock.addr().port();
    let ca = write(&dir, "ca.pem", tls.ca_pem.as_deref().unwrap());
    let profile = write(&dir, "p.json", r#"{"stages":"2:300ms","warmup":"0s"}"#);
    let out = dir.join("out");
    let run = |extra: &[&str]| {
        let mut cmd = bin();
        cmd.arg("run")
            .arg("--config")
            .arg(&profile)
            .arg("--out")
            .arg(&out);
        cmd.args(["--quiet", "--no-jsonl"]).args(extra);
        cmd.output().unwrap()
    };
    let target = format!("https://127.0.0.1:{port}");
    // Not trusted: refused before any load, naming the reason.
    let refused = run(&["--target", &target]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    let said = stderr(&refused);
    assert!(
        said.contains("invalid peer certificate") && said.contains("--cacert"),
        "{said}"
    );
    assert_eq!(said.trim().lines().count(), 1, "{said}");
    // Trusted with --cacert.
    let ok = run(&["--target", &target, "--cacert", ca.to_str().unwrap()]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(stderr(&ok).contains("TLSv1_3"), "{}", stderr(&ok));
    // Not verified with --insecure, and said so.
    let insecure = run(&["--target", &target, "--insecure"]);
    assert_eq!(insecure.status.code(), Some(0), "{}", stderr(&insecure));
    assert!(
        stderr(&insecure).contains("--insecure"),
        "{}",
        stderr(&insecure)
    );
    // --resolve: the name in the URL is verified, the address used.
    let named = run(&[
        "--target",
        &format!("https://localhost:{port}"),
        "--resolve",
        &format!("localhost:{port}:127.0.0.1"),
        "--cacert",
        ca.to_str().unwrap(),
    ]);
    assert_eq!(named.status.code(), Some(0), "{}", stderr(&named));
    let wrong = run(&[
        "--target",
        &format!("https://gateway.example:{port}"),
        "--resolve",
        &format!("gateway.example:{port}:127.0.0.1"),
        "--cacert",
        ca.to_str().unwrap(),
    ]);
    assert_eq!(wrong.status.code(), Some(2), "{}", stderr(&wrong));
    assert!(
        stderr(&wrong).contains("not valid for name"),
        "{}",
        stderr(&wrong)
    );
    mock.stop().unwrap();
}

#[test]
fn a_cacert_that_is_not_pem_is_a_usage_error_naming_the_file() {
    let dir = temp_dir("tls-junk");
    let junk = write(&dir, "junk.pem", "not a certificate");
    let profile = write(&dir, "p.json", r#"{"stages":"1:1s"}"#);
    let bad = bin()
        .args(["validate", "--target", "https://127.0.0.1:1", "--cacert"])
        .arg(&junk)
        .arg(&profile)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let said = stderr(&bad);
    assert!(
        said.contains("--cacert") && said.contains("junk.pem"),
        "{said}"
    );
}

#[test]
fn mock_tls_runs_a_profile_end_to_end_with_handshake_times() {
    let _serial = serial();
    let dir = temp_dir("mock-tls");
    let profile = concat!(env!("CARGO_MANIFEST_DIR"), "/profiles/ai-gateway.json");
    let run = bin()
        .args([
            "run",
            "--config",
            profile,
            "--mock",
            "--mock-tls",
            "--quiet",
        ])
        .args(["--stages", "2:400ms", "--warmup", "0s", "--vk", "k"])
        .arg("--out")
        .arg(&*dir)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let jsonl = common::cli::files_with_prefix(&dir, "results-");
    let text = std::fs::read_to_string(&jsonl[0]).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The first request of each connection carries its handshake time.
    let timed = lines
        .iter()
        .filter(|v| v["tls_ms"].as_f64().is_some_and(|ms| ms > 0.0))
        .count();
    assert!(timed >= 1, "{text}");
    let summary = common::cli::files_with_prefix(&dir, "summary-");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary[0]).unwrap()).unwrap();
    assert_eq!(summary["plan"]["tls"]["verify"], true);
    assert_eq!(summary["plan"]["targets"][0]["tls"], true);
    let total = &summary["stages"][0]["total"]["metrics"];
    assert_eq!(total["tls_handshakes"], total["connects"]);
}

/// A mock serving a certificate that expired in 2021 (self-signed, so it
/// is its own root), and that certificate as PEM.
fn expired_mock() -> (loadtest::mock::MockServer, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    let der = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
    let config =
        rustls::ServerConfig::builder_with_provider(loadtest::transport::trust::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], der.into())
            .unwrap();
    let mock = start_mock(|c| c.tls = Some(Arc::new(config)));
    (mock, cert.pem())
}

#[test]
fn an_expired_certificate_is_refused_at_preflight_and_counted_mid_run() {
    let _serial = serial();
    let (mock, pem) = expired_mock();
    let dir = temp_dir("tls-expired");
    let ca = write(&dir, "expired.pem", &pem);
    let profile = write(&dir, "p.json", r#"{"stages":"1:200ms","warmup":"0s"}"#);
    let refused = bin()
        .args(["run", "--quiet", "--no-jsonl", "--config"])
        .arg(&profile)
        .args(["--target", &format!("https://{}", mock.addr()), "--cacert"])
        .arg(&ca)
        .arg("--out")
        .arg(dir.join("out"))
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("expired"), "{}", stderr(&refused));
    // Past the preflight (the engine alone), every request is `tls_cert`.
    let target = format!("https://{}", mock.addr());
    let result = run(r#"{"stages":"1:200ms","warmup":"0s"}"#, &target, &[], |o| {
        o.tls_roots.clear();
        o.cacert = vec![ca.clone()];
    });
    let m = &result.stages[0].total.metrics;
    assert!(m.requests > 0);
    assert_eq!(
        m.error_count(ErrorClass::TlsCert),
        m.requests,
        "{:?}",
        m.error_counts()
    );
    mock.stop().unwrap();
}
