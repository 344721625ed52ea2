//! Parser throughput on a recorded-shape streamed response: chunked framing
//! plus SSE plus OpenAI chunk JSON, next to a baseline that only finds the line
//! ends with memchr. Single thread; prints ns per SSE event and MB/s.
//!
//! Run: `cargo bench --bench parse`

use loadtest::http::response::{BodyDecoder, Framing};
use loadtest::http::sse::SseParser;
use loadtest::protocol::openai::OpenAiChat;
use loadtest::protocol::{Protocol, ProtocolError, Reply};
use std::hint::black_box;
use std::time::Instant;

/// A 128-token streamed chat completion, framed as the mock frames it when
/// tokens are spaced out: one HTTP chunk per event.
fn recorded_stream() -> (Vec<u8>, usize) {
    let prefix = r#"{"id":"chatcmpl-8f1c2","object":"chat.completion.chunk","created":1795305600,"model":"gpt-4o-mini","#;
    let mut events = vec![format!(
        r#"data: {prefix}"choices":[{{"index":0,"delta":{{"role":"assistant","content":""}},"finish_reason":null}}]}}"#
    )];
    for i in 0..128 {
        events.push(format!(
            r#"data: {prefix}"choices":[{{"index":0,"delta":{{"content":" word{i}"}},"finish_reason":null}}]}}"#
        ));
    }
    events.push(format!(
        r#"data: {prefix}"choices":[{{"index":0,"delta":{{}},"finish_reason":"stop"}}]}}"#
    ));
    events.push(format!(
        r#"data: {prefix}"choices":[],"usage":{{"prompt_tokens":128,"completion_tokens":128,"total_tokens":256}}}}"#
    ));
    events.push("data: [DONE]".to_string());
    let mut wire = Vec::new();
    for e in &events {
        let payload = format!("{e}\n\n");
        wire.extend_from_slice(format!("{:x}\r\n", payload.len()).as_bytes());
        wire.extend_from_slice(payload.as_bytes());
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    (wire, events.len())
}

fn full_parse(wire: &[u8], read_size: usize, sse: &mut SseParser, reply: &mut Reply) -> u64 {
    let mut decoder = BodyDecoder::new(Framing::Chunked);
    sse.reset();
    reply.clear();
    let mut content = 0u64;
    for piece in wire.chunks(read_size) {
        let mut pos = 0;
        while pos < piece.len() && !decoder.is_done() {
            let step = decoder.step(&piece[pos..]).expect("valid framing");
            pos += step.consumed;
            if !step.data.is_empty() {
                sse.feed::<ProtocolError>(step.data, |event| {
                    if OpenAiChat.parse_event(event, reply)?
                        == loadtest::protocol::EventKind::Content
                    {
                        content += 1;
                    }
                    Ok(())
                })
                .expect("valid stream");
            }
        }
    }
    content
}

fn baseline(wire: &[u8], read_size: usize) -> u64 {
    let mut lines = 0u64;
    for piece in wire.chunks(read_size) {
        lines += memchr::memchr_iter(b'\n', piece).count() as u64;
    }
    lines
}

fn main() {
    let (wire, events) = recorded_stream();
    // `PARSE_ITERATIONS` shortens a run, e.g. under callgrind.
    let iterations: usize = match std::env::var("PARSE_ITERATIONS") {
        Err(_) => 20_000,
        Ok(text) => match text.parse() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!("parse: PARSE_ITERATIONS={text:?} is not a positive whole number");
                std::process::exit(2);
            }
        },
    };
    let mut sse = SseParser::new();
    let mut reply = Reply::default();
    println!(
        "stream: {} bytes, {events} SSE events; {iterations} iterations per row",
        wire.len()
    );
    println!("{:<34} {:>12} {:>10}", "path", "ns/event", "MB/s");
    for read_size in [16 * 1024, 1500, 200] {
        // Interleave A and B twice; report the better of each.
        let mut best = [f64::MAX, f64::MAX];
        for _ in 0..2 {
            let t = Instant::now();
            for _ in 0..iterations {
                black_box(full_parse(
                    black_box(&wire),
                    read_size,
                    &mut sse,
                    &mut reply,
                ));
            }
            best[0] = best[0].min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            for _ in 0..iterations {
                black_box(baseline(black_box(&wire), read_size));
            }
            best[1] = best[1].min(t.elapsed().as_secs_f64());
        }
        assert_eq!(full_parse(&wire, read_size, &mut sse, &mut reply), 128);
        let total_events = (events * iterations) as f64;
        let total_mb = (wire.len() * iterations) as f64 / 1e6;
        for (name, secs) in [
            ("chunked+SSE+JSON", best[0]),
            ("baseline memchr lines", best[1]),
        ] {
            println!(
                "{:<34} {:>12.1} {:>10.0}",
                format!("{name} ({read_size} B reads)"),
                secs * 1e9 / total_events,
                total_mb / secs
            );
        }
    }
}
