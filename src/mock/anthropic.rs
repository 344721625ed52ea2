//! Anthropic Messages replies: a `message` object, or the full stream
//! event sequence (`message_start`, `content_block_start`, `ping`, the
//! deltas, `content_block_stop`, `message_delta`, `message_stop`).

use super::generate::{generation, push_word, Generation};
use super::log::Wire;
use super::request::{ChatRequest, Knobs};
use super::server::{Buffers, Shared};
use super::timing::Timing;
use super::wire::{push_chunk, stream_head, stream_tokens, write_reply};
use crate::http::push_decimal;
use crate::rt;
use std::io;

/// Answers a Messages request; returns true when the connection must be
/// dropped (a stream cut on purpose).
pub(super) async fn messages(
    stream: &mut Wire,
    bufs: &mut Buffers,
    shared: &Shared,
    knobs: &Knobs,
    request: &ChatRequest<'_>,
    timing: Timing,
    keep_alive: bool,
) -> io::Result<bool> {
    let g = generation(shared, knobs, request, timing.fault);
    stream.tokens = Some(g.sent);
    let model = request.model.unwrap_or(b"mock");
    if request.stream {
        return stream_reply(stream, bufs, &g, model, timing, keep_alive).await;
    }
    if !timing.latency.is_zero() {
        rt::sleep(timing.latency).await;
    }
    let Buffers { out, body, .. } = bufs;
    body.clear();
    body.extend_from_slice(b"{\"id\":\"msg_mock_");
    push_decimal(body, g.id);
    body.extend_from_slice(b"\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"");
    body.extend_from_slice(model);
    body.extend_from_slice(b"\",\"content\":[{\"type\":\"text\",\"text\":\"");
    body.extend_from_slice(shared.text.borrow_mut().first(g.tokens));
    body.extend_from_slice(b"\"}],\"stop_reason\":\"");
    body.extend_from_slice(stop_reason(&g));
    body.extend_from_slice(b"\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":");
    push_decimal(body, g.prompt_tokens);
    body.extend_from_slice(b",\"output_tokens\":");
    push_decimal(body, g.tokens);
    body.extend_from_slice(b"}}");
    write_reply(stream, out, body, keep_alive, timing.fault).await
}

/// `max_tokens` when the reply was cut at the request's cap, else
/// `end_turn`.
fn stop_reason(g: &Generation) -> &'static [u8] {
    if g.hit_cap {
        b"max_tokens"
    } else {
        b"end_turn"
    }
}

/// The streamed reply, in the API's event order.
async fn stream_reply(
    stream: &mut Wire,
    bufs: &mut Buffers,
    g: &Generation,
    model: &[u8],
    timing: Timing,
    keep_alive: bool,
) -> io::Result<bool> {
    let Buffers { out, events, .. } = bufs;
    stream_head(out, keep_alive);
    events.clear();
    opening_events(events, g, model);
    let token = |e: &mut Vec<u8>, i| {
        named_event(e, "content_block_delta", |e| {
            e.extend_from_slice(
                b"{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"",
            );
            push_word(e, i);
            e.extend_from_slice(b"\"}}");
        })
    };
    let error = |e: &mut Vec<u8>| {
        named_event(e, "error", |e| {
            e.extend_from_slice(
                b"{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"mock fault\"}}",
            )
        })
    };
    if stream_tokens(stream, out, events, g.tokens, timing, token, error).await? {
        return Ok(true);
    }
    named_event(events, "content_block_stop", |e| {
        e.extend_from_slice(b"{\"type\":\"content_block_stop\",\"index\":0}")
    });
    named_event(events, "message_delta", |e| {
        e.extend_from_slice(b"{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"");
        e.extend_from_slice(stop_reason(g));
        e.extend_from_slice(b"\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":");
        push_decimal(e, g.tokens);
        e.extend_from_slice(b"}}");
    });
    named_event(events, "message_stop", |e| {
        e.extend_from_slice(b"{\"type\":\"message_stop\"}")
    });
    push_chunk(out, events);
    out.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(out).await?;
    Ok(false)
}

/// `message_start`, `content_block_start` and `ping`.
fn opening_events(events: &mut Vec<u8>, g: &Generation, model: &[u8]) {
    named_event(events, "message_start", |e| {
        e.extend_from_slice(b"{\"type\":\"message_start\",\"message\":{\"id\":\"msg_mock_");
        push_decimal(e, g.id);
        e.extend_from_slice(b"\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"");
        e.extend_from_slice(model);
        e.extend_from_slice(b"\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":");
        push_decimal(e, g.prompt_tokens);
        e.extend_from_slice(b",\"output_tokens\":1}}}");
    });
    named_event(events, "content_block_start", |e| {
        e.extend_from_slice(
            b"{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}",
        )
    });
    named_event(events, "ping", |e| {
        e.extend_from_slice(b"{\"type\":\"ping\"}")
    });
}

/// Appends one named SSE event.
fn named_event(out: &mut Vec<u8>, name: &str, data: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    data(out);
    out.extend_from_slice(b"\n\n");
}
