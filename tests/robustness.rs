//! Untrusted bytes through every parser: nothing may panic, loop forever or
//! grow without bound. Seeded, so a failure reproduces; 20,000 inputs per
//! parser, half random bytes and half mutations of a valid message.

use loadtest::http::response::{parse_head, BodyDecoder, Framing};
use loadtest::http::sse::{self, SseParser};
use loadtest::protocol::json::Scanner;
use loadtest::protocol::openai::OpenAiChat;
use loadtest::protocol::{Protocol, ProtocolError, Reply};
use loadtest::rng::Rng;

const CASES: usize = 20_000;

fn input(rng: &mut Rng, valid: &[u8]) -> Vec<u8> {
    if rng.below(2) == 0 {
        let len = rng.below(300) as usize;
        let alphabet = b"HTP/1.0 2\r\n:;-chunkedContent-Length{}[]\",datoe\\u 9fF";
        (0..len)
            .map(|_| {
                if rng.below(4) == 0 {
                    rng.next_u64() as u8
                } else {
                    alphabet[rng.below(alphabet.len() as u64) as usize]
                }
            })
            .collect()
    } else {
        let mut bytes = valid.to_vec();
        for _ in 0..=rng.below(4) {
            if bytes.is_empty() {
                break;
            }
            let at = rng.below(bytes.len() as u64) as usize;
            match rng.below(3) {
                0 => bytes[at] = rng.next_u64() as u8,
                1 => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, rng.next_u64() as u8),
            }
        }
        bytes
    }
}

#[test]
fn response_heads_never_panic() {
    let mut rng = Rng::new(1);
    let valid = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nTransfer-Encoding: chunked\r\nRetry-After: 3\r\n\r\n";
    for _ in 0..CASES {
        let bytes = input(&mut rng, valid);
        let _ = parse_head(&bytes);
    }
}

#[test]
fn body_decoders_never_panic_and_always_progress() {
    let mut rng = Rng::new(2);
    let valid = b"5;x=1\r\nhello\r\n6\r\n world\r\n0\r\nT: v\r\n\r\n";
    for _ in 0..CASES {
        let bytes = input(&mut rng, valid);
        for framing in [Framing::Chunked, Framing::Length(17), Framing::UntilClose] {
            let mut decoder = BodyDecoder::new(framing);
            let mut pos = 0;
            let cut = rng.below(bytes.len() as u64 + 1) as usize;
            for piece in [&bytes[..cut], &bytes[cut..]] {
                let mut at = 0;
                while at < piece.len() && !decoder.is_done() {
                    match decoder.step(&piece[at..]) {
                        Ok(step) => {
                            assert!(step.consumed > 0 || step.done, "no progress");
                            at += step.consumed;
                        }
                        Err(_) => break,
                    }
                }
                pos += at;
            }
            assert!(pos <= bytes.len());
            let _ = decoder.finish_at_eof();
        }
    }
}

#[test]
fn sse_and_openai_events_never_panic() {
    let mut rng = Rng::new(3);
    let valid = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}],\"usage\":{\"prompt_tokens\":3}}\n\n: c\r\nevent: x\ndata: [DONE]\n\n";
    let mut parser = SseParser::new();
    let mut reply = Reply {
        keep_content: true,
        ..Reply::default()
    };
    for _ in 0..CASES {
        let bytes = input(&mut rng, valid);
        parser.reset();
        reply.clear();
        let cut = rng.below(bytes.len() as u64 + 1) as usize;
        for piece in [&bytes[..cut], &bytes[cut..]] {
            let _ = parser.feed::<ProtocolError>(piece, |event: sse::Event<'_>| {
                OpenAiChat.parse_event(event, &mut reply).map(|_| ())
            });
        }
        assert!(reply.content.len() <= bytes.len());
    }
}

#[test]
fn json_skimmer_and_bodies_never_panic() {
    let mut rng = Rng::new(4);
    let valid = br#"{"choices":[{"message":{"content":"a\u00e9\n\"b"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2},"x":[1.5e3,true,null,{}]}"#;
    let mut reply = Reply::default();
    for _ in 0..CASES {
        let bytes = input(&mut rng, valid);
        let mut scanner = Scanner::new(&bytes);
        let _ = scanner.skip().and_then(|_| scanner.finish());
        reply.clear();
        let _ = OpenAiChat.parse_body(&bytes, &mut reply);
    }
}

#[test]
fn deep_nesting_is_rejected_not_recursed() {
    let deep = "[".repeat(100_000);
    let mut scanner = Scanner::new(deep.as_bytes());
    assert!(scanner.skip().is_err());
    let mut reply = Reply::default();
    let body = format!("{{\"choices\":{}", "[".repeat(100_000));
    assert_eq!(
        OpenAiChat.parse_body(body.as_bytes(), &mut reply),
        Err(ProtocolError::BadJson)
    );
}

/// Keys the generator draws from: the schema's own, a few typos, and a
/// stranger, at any depth.
const PROFILE_KEYS: &[&str] = &[
    "defaults",
    "scenarios",
    "stages",
    "warmup",
    "think_time",
    "cache_mode",
    "correlation",
    "thresholds",
    "timeout",
    "seed",
    "name",
    "weight",
    "protocol",
    "target",
    "model",
    "headers",
    "system",
    "max_tokens",
    "stream",
    "turns",
    "content",
    "mode",
    "prompts",
    "script",
    "approx_input_tokens",
    "min",
    "max",
    "concurrency",
    "duration",
    "uuid_in_prompt",
    "header",
    "ttft_p95_ms",
    "p95_ms",
    "error_rate",
    "min_rps",
    "auth",
    "shared_prefix_tokens",
    "mdoe",
    "wieght",
    "zzz",
];

fn random_value(rng: &mut Rng, depth: u32) -> serde_json::Value {
    use serde_json::{json, Value};
    let strings = [
        "",
        "pool",
        "sized",
        "scripted",
        "bust",
        "natural",
        "shared-prefix",
        "anthropic",
        "openai-chat",
        "1:1s",
        "@5:1s",
        "2:1s,3:2s",
        "10ms",
        "1h",
        "-1s",
        "x-api-key",
        "bearer",
        "http://127.0.0.1:9",
        "\u{0}",
        "a\r\nb: c",
    ];
    match rng.below(if depth >= 4 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => json!(rng.below(2) == 0),
        2 => {
            let numbers = [0.0, 1.0, -1.0, 0.5, 3.0, 1e9, 1e300, 4294967296.0, 55.0];
            json!(numbers[rng.below(numbers.len() as u64) as usize])
        }
        3 => json!(rng.next_u64() >> rng.below(64)),
        4 => json!(strings[rng.below(strings.len() as u64) as usize]),
        5 => Value::Array(
            (0..rng.below(4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let mut map = serde_json::Map::new();
            for _ in 0..rng.below(6) {
                let key = PROFILE_KEYS[rng.below(PROFILE_KEYS.len() as u64) as usize];
                map.insert(key.to_string(), random_value(rng, depth + 1));
            }
            Value::Object(map)
        }
    }
}

/// Loads a profile the way `run` does; the target is forced to loopback
/// so no input can make the test resolve a host name.
fn load(text: &str) -> Result<(), String> {
    let profile = loadtest::config::parse(text)?;
    let overrides = loadtest::plan::Overrides {
        target: Some("http://127.0.0.1:9".into()),
        ..Default::default()
    };
    loadtest::plan::build(&profile, &overrides, vec![0]).map(|_| ())
}

#[test]
fn the_profile_loader_never_panics() {
    let mut rng = Rng::new(0x9e0f11e);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/profiles");
    let mut shipped: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    shipped.sort();
    let mut accepted = 0;
    for case in 0..CASES {
        let text = if case % 2 == 0 {
            let valid = &shipped[rng.below(shipped.len() as u64) as usize];
            String::from_utf8_lossy(&input(&mut rng, valid)).into_owned()
        } else {
            random_value(&mut rng, 0).to_string()
        };
        let outcome = std::panic::catch_unwind(|| load(&text));
        match outcome {
            Err(_) => panic!("the loader panicked on: {text}"),
            Ok(Ok(())) => accepted += 1,
            Ok(Err(message)) => {
                assert!(!message.is_empty(), "empty error for: {text}");
                assert!(
                    !message.contains('\n'),
                    "multi-line error `{message}` for: {text}"
                );
            }
        }
    }
    // Some mutations keep a profile valid; the test must not only ever
    // exercise the first error path.
    assert!(accepted > 100, "only {accepted} inputs were accepted");
}
