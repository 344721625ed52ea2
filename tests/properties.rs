//! Properties of the decoders, checked on seeded random inputs: a response
//! head, a chunked or sized body and an SSE stream decode to the same
//! result however the bytes are split across reads (at every byte
//! boundary for the first cases, at random points after), and generated
//! text comes back exactly through the JSON skimmer whatever it holds.
//!
//! `LOADTEST_PROPERTY_CASES` sets the cases per property (default 20,000);
//! the long run in `tests/README.md` uses 10 million, in release mode.

use loadtest::http::response::{parse_head, BodyDecoder, Framing, HeadParse};
use loadtest::http::sse::{self, SseParser};
use loadtest::protocol::openai::OpenAiChat;
use loadtest::protocol::{Protocol, ProtocolError, Reply};
use loadtest::rng::Rng;

fn cases() -> u64 {
    std::env::var("LOADTEST_PROPERTY_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000)
}

/// Cases split at every byte boundary; later ones at random points.
const EVERY_BOUNDARY_CASES: u64 = 300;

/// The ways to split `len` bytes into reads for case `case`: every single
/// cut for the first cases, otherwise one to four random cuts.
fn splits(rng: &mut Rng, case: u64, len: usize) -> Vec<Vec<usize>> {
    if case < EVERY_BOUNDARY_CASES {
        return (0..=len).map(|cut| vec![cut]).collect();
    }
    let mut cuts: Vec<usize> = (0..=rng.below(4))
        .map(|_| rng.below(len as u64 + 1) as usize)
        .collect();
    cuts.sort_unstable();
    vec![cuts]
}

/// `bytes` cut at `cuts` (sorted) into consecutive pieces.
fn pieces<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut from = 0;
    for &cut in cuts {
        out.push(&bytes[from..cut]);
        from = cut;
    }
    out.push(&bytes[from..]);
    out
}

fn random_bytes(rng: &mut Rng, max: u64) -> Vec<u8> {
    (0..rng.below(max + 1))
        .map(|_| rng.next_u64() as u8)
        .collect()
}

/// Text with what makes JSON and SSE hard: quotes, backslashes, control
/// characters, multi-byte characters, and characters that look like
/// framing (`:`, `data:`).
fn random_text(rng: &mut Rng, max: u64) -> String {
    const PARTS: &[&str] = &[
        "a", "Z", " ", "  ", "\"", "\\", "/", "\t", "\u{1}", "\u{1f}", "é", "日本", "🦀",
        "\u{2028}", ":", "data:", "{}", "[DONE]", "0", "\u{7f}", "\u{fffd}",
    ];
    (0..rng.below(max + 1))
        .map(|_| PARTS[rng.below(PARTS.len() as u64) as usize])
        .collect()
}

#[test]
fn a_response_head_parses_the_same_however_it_arrives() {
    let mut rng = Rng::new(21);
    for case in 0..cases().min(200_000) {
        let status = 100 + rng.below(500) as u16;
        let mut head = format!("HTTP/1.{} {status} Whatever\r\n", rng.below(2));
        let length = rng.below(100_000);
        let chunked = rng.below(2) == 0;
        let name = |n: &str, rng: &mut Rng| {
            if rng.below(2) == 0 {
                n.to_ascii_uppercase()
            } else {
                n.to_string()
            }
        };
        if chunked {
            head += &format!("{}: chunked\r\n", name("transfer-encoding", &mut rng));
        } else {
            head += &format!("{}:{length}\r\n", name("content-length", &mut rng));
        }
        for _ in 0..rng.below(5) {
            head += &format!(
                "x-{}: {}\r\n",
                rng.below(1000),
                random_text(&mut rng, 5).replace(['\r', '\n', '\u{1}', '\u{1f}', '\u{7f}'], "")
            );
        }
        head += "\r\n";
        let bytes = head.as_bytes();
        let whole = match parse_head(bytes) {
            Ok(HeadParse::Complete(h)) => h,
            other => panic!("{other:?} for {head:?}"),
        };
        assert_eq!(whole.status, status);
        assert_eq!(whole.head_bytes, bytes.len());
        let framing = if chunked {
            Framing::Chunked
        } else {
            Framing::Length(length)
        };
        // (204, 304 and 1xx have no body whatever the head says.)
        if status == 200 {
            assert_eq!(whole.framing, framing, "{head:?}");
        }
        // A read that ends early is incomplete, never an error.
        for cut in splits(&mut rng, case, bytes.len()).into_iter().flatten() {
            if cut < bytes.len() {
                assert_eq!(
                    parse_head(&bytes[..cut]),
                    Ok(HeadParse::Incomplete),
                    "{cut} of {head:?}"
                );
            }
        }
    }
}

/// Decodes `pieces` with one decoder; returns the body and whether it ended.
fn decode(framing: Framing, pieces: &[&[u8]]) -> (Vec<u8>, bool) {
    let mut decoder = BodyDecoder::new(framing);
    let mut body = Vec::new();
    for piece in pieces {
        let mut at = 0;
        while at < piece.len() && !decoder.is_done() {
            let step = decoder.step(&piece[at..]).expect("a valid body decodes");
            assert!(step.consumed > 0 || step.done, "no progress");
            body.extend_from_slice(step.data);
            at += step.consumed;
        }
    }
    (body, decoder.is_done())
}

#[test]
fn a_body_decodes_the_same_however_it_arrives() {
    let mut rng = Rng::new(22);
    for case in 0..cases() {
        let body = random_bytes(&mut rng, 200);
        // Chunked, with random chunk sizes, hex case, extensions, trailers.
        let mut wire = Vec::new();
        let mut rest = &body[..];
        while !rest.is_empty() {
            let size = (1 + rng.below(40) as usize).min(rest.len());
            let hex = format!("{size:x}");
            let hex = if rng.below(2) == 0 {
                hex.to_uppercase()
            } else {
                hex
            };
            let ext = if rng.below(4) == 0 { ";name=value" } else { "" };
            wire.extend_from_slice(format!("{hex}{ext}\r\n").as_bytes());
            wire.extend_from_slice(&rest[..size]);
            wire.extend_from_slice(b"\r\n");
            rest = &rest[size..];
        }
        wire.extend_from_slice(if rng.below(2) == 0 {
            b"0\r\n\r\n"
        } else {
            b"0\r\nX-T: v\r\n\r\n"
        });
        for cuts in splits(&mut rng, case, wire.len()) {
            let (decoded, done) = decode(Framing::Chunked, &pieces(&wire, &cuts));
            assert!(done, "chunked body not ended, cuts {cuts:?}");
            assert_eq!(decoded, body, "chunked, cuts {cuts:?}");
        }
        // Sized.
        for cuts in splits(&mut rng, case, body.len()) {
            let (decoded, done) = decode(Framing::Length(body.len() as u64), &pieces(&body, &cuts));
            assert!(done);
            assert_eq!(decoded, body);
        }
    }
}

/// Ends a line with LF, CRLF or CR, at random; never an LF right after a
/// CR ending, which would make the two one CRLF.
fn end_line(rng: &mut Rng, wire: &mut String) {
    let after_cr = wire.ends_with('\r');
    *wire += match rng.below(3) {
        0 if !after_cr => "\n",
        1 => "\r\n",
        _ => "\r",
    };
}

#[test]
fn an_event_stream_parses_the_same_however_it_arrives() {
    let mut rng = Rng::new(23);
    let mut parser = SseParser::new();
    for case in 0..cases() {
        let mut wire = String::new();
        let mut expected: Vec<(String, String)> = Vec::new();
        for _ in 0..=rng.below(4) {
            if rng.below(3) == 0 {
                wire += ": comment";
                end_line(&mut rng, &mut wire);
            }
            let name = if rng.below(2) == 0 {
                format!("e{}", rng.below(9))
            } else {
                String::new()
            };
            if !name.is_empty() {
                wire += &format!("event: {name}");
                end_line(&mut rng, &mut wire);
            }
            let mut lines = Vec::new();
            for _ in 0..=rng.below(2) {
                let text = random_text(&mut rng, 8).replace(['\r', '\n'], "");
                // One leading space after the colon is dropped; others stay.
                let space = if rng.below(2) == 0 || text.starts_with(' ') {
                    " "
                } else {
                    ""
                };
                wire += &format!("data:{space}{text}");
                end_line(&mut rng, &mut wire);
                lines.push(text);
            }
            end_line(&mut rng, &mut wire);
            expected.push((name, lines.join("\n")));
        }
        let bytes = wire.as_bytes();
        for cuts in splits(&mut rng, case, bytes.len()) {
            parser.reset();
            let mut got: Vec<(String, String)> = Vec::new();
            for piece in pieces(bytes, &cuts) {
                parser
                    .feed::<ProtocolError>(piece, |event: sse::Event<'_>| {
                        got.push((
                            String::from_utf8(event.name.to_vec()).unwrap(),
                            String::from_utf8(event.data.to_vec()).unwrap(),
                        ));
                        Ok(())
                    })
                    .unwrap();
            }
            assert_eq!(got, expected, "cuts {cuts:?} of {wire:?}");
        }
    }
}

#[test]
fn generated_text_comes_back_exactly_through_the_json_skimmer() {
    let mut rng = Rng::new(24);
    let mut reply = Reply {
        keep_content: true,
        ..Reply::default()
    };
    for _ in 0..cases() {
        let text = random_text(&mut rng, 30);
        let body = serde_json::json!({
            "id": "x", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4}
        })
        .to_string();
        reply.clear();
        OpenAiChat.parse_body(body.as_bytes(), &mut reply).unwrap();
        assert_eq!(reply.content, text.as_bytes(), "{body}");
        assert_eq!(reply.content_bytes, text.len() as u64);
        assert_eq!(reply.completion_tokens, Some(4));
        // The same text as a stream's delta.
        let chunk = serde_json::json!({
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]
        })
        .to_string();
        reply.clear();
        let event = sse::Event {
            name: b"",
            data: chunk.as_bytes(),
        };
        OpenAiChat.parse_event(event, &mut reply).unwrap();
        assert_eq!(reply.content, text.as_bytes(), "{chunk}");
    }
}
