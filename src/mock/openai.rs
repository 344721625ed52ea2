//! OpenAI Chat Completions replies: a `chat.completion` object, or a
//! stream of `chat.completion.chunk` events ending in `[DONE]`.

use super::generate::{generation, push_word, Generation};
use super::log::Wire;
use super::request::{ChatRequest, Knobs};
use super::server::{Buffers, Shared};
use super::timing::Timing;
use super::wire::{push_chunk, stream_head, stream_tokens, write_reply};
use crate::http::push_decimal;
use crate::rt;
use std::io;
use std::time::SystemTime;

/// Answers a chat request; returns true when the connection must be
/// dropped (a stream cut on purpose).
pub(super) async fn chat(
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
    let chunk_at = object_prefix(&mut bufs.prefix, g.id, request.model.unwrap_or(b"mock"));
    if !request.stream {
        if !timing.latency.is_zero() {
            rt::sleep(timing.latency).await;
        }
        let Buffers {
            out, body, prefix, ..
        } = bufs;
        body.clear();
        body.extend_from_slice(prefix);
        body.extend_from_slice(
            b",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"",
        );
        body.extend_from_slice(shared.text.borrow_mut().first(g.tokens));
        body.extend_from_slice(b"\"},\"finish_reason\":\"");
        body.extend_from_slice(finish(&g));
        body.extend_from_slice(b"\"}],");
        usage(body, &g);
        body.push(b'}');
        return write_reply(stream, out, body, keep_alive, timing.fault).await;
    }
    let Buffers {
        prefix,
        chunk_prefix,
        ..
    } = &mut *bufs;
    // `chat.completion.chunk` objects: the same fields, another object.
    chunk_prefix.clear();
    chunk_prefix.extend_from_slice(&prefix[..chunk_at]);
    chunk_prefix.extend_from_slice(b".chunk");
    chunk_prefix.extend_from_slice(&prefix[chunk_at..]);
    stream_reply(stream, bufs, &g, timing, request.include_usage, keep_alive).await
}

/// Writes the fields every object of a reply starts with into `prefix`;
/// returns where `.chunk` goes for the streamed object name.
fn object_prefix(prefix: &mut Vec<u8>, id: u64, model: &[u8]) -> usize {
    let created = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    prefix.clear();
    prefix.extend_from_slice(b"{\"id\":\"chatcmpl-mock-");
    push_decimal(prefix, id);
    prefix.extend_from_slice(b"\",\"object\":\"chat.completion");
    let chunk_at = prefix.len();
    prefix.extend_from_slice(b"\",\"created\":");
    push_decimal(prefix, created);
    prefix.extend_from_slice(b",\"model\":\"");
    prefix.extend_from_slice(model);
    prefix.push(b'"');
    chunk_at
}

/// `length` when the reply was cut at the request's cap, else `stop`.
fn finish(g: &Generation) -> &'static [u8] {
    if g.hit_cap {
        b"length"
    } else {
        b"stop"
    }
}

/// The streamed reply: a role event, the tokens, the finish event, the
/// usage event when asked for, and `[DONE]`.
async fn stream_reply(
    stream: &mut Wire,
    bufs: &mut Buffers,
    g: &Generation,
    timing: Timing,
    include_usage: bool,
    keep_alive: bool,
) -> io::Result<bool> {
    let Buffers {
        out,
        chunk_prefix,
        events,
        ..
    } = bufs;
    stream_head(out, keep_alive);
    events.clear();
    event(events, chunk_prefix, |e| {
        e.extend_from_slice(b"\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]")
    });
    let token = |e: &mut Vec<u8>, i| {
        event(e, chunk_prefix, |e| {
            e.extend_from_slice(b"\"content\":\"");
            push_word(e, i);
            e.extend_from_slice(b"\"},\"finish_reason\":null}]");
        })
    };
    let error = |e: &mut Vec<u8>| {
        e.extend_from_slice(
            b"data: {\"error\":{\"message\":\"mock fault\",\"type\":\"server_error\"}}\n\n",
        )
    };
    if stream_tokens(stream, out, events, g.tokens, timing, token, error).await? {
        return Ok(true);
    }
    event(events, chunk_prefix, |e| {
        e.extend_from_slice(b"},\"finish_reason\":\"");
        e.extend_from_slice(finish(g));
        e.extend_from_slice(b"\"}]");
    });
    if include_usage {
        events.extend_from_slice(b"data: ");
        events.extend_from_slice(chunk_prefix);
        events.extend_from_slice(b",\"choices\":[],");
        usage(events, g);
        events.extend_from_slice(b"}\n\n");
    }
    events.extend_from_slice(b"data: [DONE]\n\n");
    push_chunk(out, events);
    out.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(out).await?;
    Ok(false)
}

/// Appends the `usage` field.
fn usage(out: &mut Vec<u8>, g: &Generation) {
    out.extend_from_slice(b"\"usage\":{\"prompt_tokens\":");
    push_decimal(out, g.prompt_tokens);
    out.extend_from_slice(b",\"completion_tokens\":");
    push_decimal(out, g.tokens);
    out.extend_from_slice(b",\"total_tokens\":");
    push_decimal(out, g.prompt_tokens + g.tokens);
    out.push(b'}');
}

/// Appends `data: <prefix>,"choices":[{"index":0,"delta":{` + the rest + `}\n\n`.
fn event(out: &mut Vec<u8>, chunk_prefix: &[u8], rest: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(chunk_prefix);
    out.extend_from_slice(b",\"choices\":[{\"index\":0,\"delta\":{");
    rest(out);
    out.extend_from_slice(b"}\n\n");
}
