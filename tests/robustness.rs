//! Untrusted bytes through every parser: nothing may panic, loop forever or
//! grow without bound. Seeded, so a failure reproduces; 20,000 inputs per
//! parser, half random bytes and half mutations of a valid message.

use loadtest::http::response::{parse_head, BodyDecoder, Framing};
use loadtest::protocol::json::Scanner;
use loadtest::protocol::openai::OpenAiChat;
use loadtest::protocol::{Protocol, ProtocolError, Reply};
use loadtest::rng::Rng;
use loadtest::sse::{self, SseParser};

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
