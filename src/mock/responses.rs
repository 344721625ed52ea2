//! OpenAI Responses replies (`POST /v1/responses`): a `response` object, or
//! the stream of typed events in the API's order (`response.created`,
//! `response.in_progress`, `response.output_item.added`,
//! `response.content_part.added`, `response.output_text.delta` × n,
//! `response.output_text.done`, `response.content_part.done`,
//! `response.output_item.done`, then `response.completed`), every event
//! with its `sequence_number`. A reply cut at `max_output_tokens` has
//! status `incomplete` with `incomplete_details.reason` `max_output_tokens`,
//! and its stream ends with `response.incomplete`.
//!
//! Ids are `resp_mock_<shard>_<n>`. A `previous_response_id` this shard did
//! not make recently is answered 404, as the real API answers an unknown
//! one; an id of another shard (a reconnect may land elsewhere) is taken on
//! trust, since shards share nothing.

use super::faults::Fault;
use super::generate::{generation, push_word, Generation};
use super::log::Wire;
use super::request::{ChatRequest, Knobs};
use super::server::{Buffers, Shared};
use super::timing::Timing;
use super::wire::{push_chunk, stream_head, stream_tokens, write_reply, write_simple};
use crate::http::push_decimal;
use crate::rt;
use std::io;
use std::time::SystemTime;

/// Answers a Responses request; returns true when the connection must be
/// dropped (a stream cut on purpose).
pub(super) async fn respond(
    stream: &mut Wire,
    bufs: &mut Buffers,
    shared: &Shared,
    knobs: &Knobs,
    request: &ChatRequest<'_>,
    timing: Timing,
    keep_alive: bool,
) -> io::Result<bool> {
    if let Some(previous) = request.previous_response_id {
        if !known(shared, previous) {
            let id = String::from_utf8_lossy(previous);
            let body = serde_json::json!({"error": {
                "message": format!("Previous response with id '{id}' not found."),
                "type": "invalid_request_error",
                "param": "previous_response_id",
                "code": "previous_response_not_found",
            }})
            .to_string();
            write_simple(stream, &mut bufs.out, 404, body.as_bytes(), keep_alive).await?;
            return Ok(false);
        }
    }
    let g = generation(shared, knobs, request, timing.fault);
    stream.tokens = Some(g.sent);
    shared.response_ids.borrow_mut().remember(g.id);
    let reply = Reply {
        g: &g,
        shard: shared.shard,
        model: request.model.unwrap_or(b"mock"),
        created: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    if request.stream {
        return stream_reply(stream, bufs, shared, &reply, timing, keep_alive).await;
    }
    if !timing.latency.is_zero() {
        rt::sleep(timing.latency).await;
    }
    let Buffers { out, body, .. } = bufs;
    body.clear();
    reply.object(body, Some(shared.text.borrow_mut().first(g.tokens)));
    write_reply(stream, out, body, keep_alive, timing.fault).await
}

/// Whether `id` names a response this shard made recently (or another
/// shard's, which cannot be checked here).
fn known(shared: &Shared, id: &[u8]) -> bool {
    let Some(rest) = id.strip_prefix(b"resp_mock_") else {
        return false;
    };
    let text = std::str::from_utf8(rest).unwrap_or("");
    let Some((shard, n)) = text.split_once('_') else {
        return false;
    };
    match (shard.parse::<usize>(), n.parse::<u64>()) {
        (Ok(shard), Ok(n)) if shard == shared.shard => shared.response_ids.borrow().knows(n),
        (Ok(_), Ok(_)) => true,
        _ => false,
    }
}

/// What every object of one reply shares.
struct Reply<'a> {
    g: &'a Generation,
    shard: usize,
    model: &'a [u8],
    created: u64,
}

impl Reply<'_> {
    fn incomplete(&self) -> bool {
        self.g.hit_cap
    }

    fn push_id(&self, out: &mut Vec<u8>, prefix: &[u8]) {
        out.extend_from_slice(prefix);
        push_decimal(out, self.shard as u64);
        out.push(b'_');
        push_decimal(out, self.g.id);
    }

    /// The `response` object: in progress (no output yet) when `text` is
    /// `None`, finished with its output and usage otherwise.
    fn object(&self, out: &mut Vec<u8>, text: Option<&[u8]>) {
        out.extend_from_slice(b"{\"id\":\"");
        self.push_id(out, b"resp_mock_");
        out.extend_from_slice(b"\",\"object\":\"response\",\"created_at\":");
        push_decimal(out, self.created);
        out.extend_from_slice(b",\"model\":\"");
        out.extend_from_slice(self.model);
        let status: &[u8] = match (text, self.incomplete()) {
            (None, _) => b"in_progress",
            (Some(_), true) => b"incomplete",
            (Some(_), false) => b"completed",
        };
        out.extend_from_slice(b"\",\"status\":\"");
        out.extend_from_slice(status);
        out.extend_from_slice(b"\",\"error\":null,\"incomplete_details\":");
        if text.is_some() && self.incomplete() {
            out.extend_from_slice(b"{\"reason\":\"max_output_tokens\"}");
        } else {
            out.extend_from_slice(b"null");
        }
        out.extend_from_slice(b",\"instructions\":null,\"metadata\":{},\"parallel_tool_calls\":true,\"temperature\":1.0,\"top_p\":1.0,\"tool_choice\":\"auto\",\"tools\":[],\"text\":{\"format\":{\"type\":\"text\"}},\"output\":[");
        if let Some(text) = text {
            self.message_item(out, Some(text));
        }
        out.extend_from_slice(b"],\"usage\":");
        match text {
            Some(_) => self.usage(out),
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
    }

    /// The output message item, with its text part when `text` is given.
    fn message_item(&self, out: &mut Vec<u8>, text: Option<&[u8]>) {
        out.extend_from_slice(b"{\"id\":\"");
        self.push_id(out, b"msg_mock_");
        out.extend_from_slice(b"\",\"type\":\"message\",\"role\":\"assistant\",\"status\":\"");
        out.extend_from_slice(if text.is_some() {
            b"completed"
        } else {
            b"in_progress"
        });
        out.extend_from_slice(b"\",\"content\":[");
        if let Some(text) = text {
            text_part(out, text);
        }
        out.extend_from_slice(b"]}");
    }

    fn usage(&self, out: &mut Vec<u8>) {
        let g = self.g;
        out.extend_from_slice(b"{\"input_tokens\":");
        push_decimal(out, g.prompt_tokens);
        out.extend_from_slice(
            b",\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":",
        );
        push_decimal(out, g.tokens);
        out.extend_from_slice(
            b",\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":",
        );
        push_decimal(out, g.prompt_tokens + g.tokens);
        out.push(b'}');
    }

    /// `"item_id":"msg_mock_…","output_index":0,"content_index":0`.
    fn part_address(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\"item_id\":\"");
        self.push_id(out, b"msg_mock_");
        out.extend_from_slice(b"\",\"output_index\":0,\"content_index\":0");
    }
}

/// An `output_text` content part.
fn text_part(out: &mut Vec<u8>, text: &[u8]) {
    out.extend_from_slice(b"{\"type\":\"output_text\",\"annotations\":[],\"text\":\"");
    out.extend_from_slice(text);
    out.extend_from_slice(b"\"}");
}

/// Appends one typed event: `event: <name>`, and data that starts with its
/// `type` and `sequence_number`, then `rest`.
fn typed_event(out: &mut Vec<u8>, name: &str, sequence: u64, rest: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: {\"type\":\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\",\"sequence_number\":");
    push_decimal(out, sequence);
    out.push(b',');
    rest(out);
    out.extend_from_slice(b"}\n\n");
}

/// Events before the first delta.
const OPENING_EVENTS: u64 = 4;

/// The streamed reply, in the API's event order.
async fn stream_reply(
    stream: &mut Wire,
    bufs: &mut Buffers,
    shared: &Shared,
    reply: &Reply<'_>,
    timing: Timing,
    keep_alive: bool,
) -> io::Result<bool> {
    let Buffers { out, events, .. } = bufs;
    stream_head(out, keep_alive);
    events.clear();
    opening_events(events, reply);
    // An error event halfway takes a sequence number too.
    let half = reply.g.tokens / 2;
    let errored = timing.fault == Fault::ErrorEvent;
    let token = |e: &mut Vec<u8>, i: u64| {
        let sequence = OPENING_EVENTS + i + u64::from(errored && i >= half);
        typed_event(e, "response.output_text.delta", sequence, |e| {
            reply.part_address(e);
            e.extend_from_slice(b",\"delta\":\"");
            push_word(e, i);
            e.extend_from_slice(b"\",\"logprobs\":[]");
        })
    };
    let error = |e: &mut Vec<u8>| {
        typed_event(e, "error", OPENING_EVENTS + half, |e| {
            e.extend_from_slice(
                b"\"code\":\"server_error\",\"message\":\"mock fault\",\"param\":null",
            )
        })
    };
    if stream_tokens(stream, out, events, reply.g.tokens, timing, token, error).await? {
        return Ok(true);
    }
    let next = OPENING_EVENTS + reply.g.tokens + u64::from(errored);
    closing_events(
        events,
        reply,
        shared.text.borrow_mut().first(reply.g.tokens),
        next,
    );
    push_chunk(out, events);
    out.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(out).await?;
    Ok(false)
}

/// `response.created`, `response.in_progress`, the output item and its
/// content part, sequence numbers 0 to 3.
fn opening_events(events: &mut Vec<u8>, reply: &Reply<'_>) {
    for (sequence, name) in ["response.created", "response.in_progress"]
        .iter()
        .enumerate()
    {
        typed_event(events, name, sequence as u64, |e| {
            e.extend_from_slice(b"\"response\":");
            reply.object(e, None);
        });
    }
    typed_event(events, "response.output_item.added", 2, |e| {
        e.extend_from_slice(b"\"output_index\":0,\"item\":");
        reply.message_item(e, None);
    });
    typed_event(events, "response.content_part.added", 3, |e| {
        reply.part_address(e);
        e.extend_from_slice(b",\"part\":");
        text_part(e, b"");
    });
}

/// The text, part and item done events and the final response, from
/// sequence number `next` on.
fn closing_events(events: &mut Vec<u8>, reply: &Reply<'_>, text: &[u8], next: u64) {
    typed_event(events, "response.output_text.done", next, |e| {
        reply.part_address(e);
        e.extend_from_slice(b",\"text\":\"");
        e.extend_from_slice(text);
        e.extend_from_slice(b"\",\"logprobs\":[]");
    });
    typed_event(events, "response.content_part.done", next + 1, |e| {
        reply.part_address(e);
        e.extend_from_slice(b",\"part\":");
        text_part(e, text);
    });
    typed_event(events, "response.output_item.done", next + 2, |e| {
        e.extend_from_slice(b"\"output_index\":0,\"item\":");
        reply.message_item(e, Some(text));
    });
    let last = if reply.incomplete() {
        "response.incomplete"
    } else {
        "response.completed"
    };
    typed_event(events, last, next + 3, |e| {
        e.extend_from_slice(b"\"response\":");
        reply.object(e, Some(text));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generation(tokens: u64, hit_cap: bool) -> Generation {
        Generation {
            id: 7,
            tokens,
            sent: tokens,
            hit_cap,
            prompt_tokens: 5,
        }
    }

    #[test]
    fn objects_and_events_are_the_apis_json() {
        let g = generation(2, true);
        let reply = Reply {
            g: &g,
            shard: 1,
            model: b"m",
            created: 9,
        };
        let mut out = Vec::new();
        reply.object(&mut out, Some(b" the gateway"));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["id"], "resp_mock_1_7");
        assert_eq!(v["status"], "incomplete");
        assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(v["output"][0]["content"][0]["text"], " the gateway");
        assert_eq!(v["usage"]["output_tokens"], 2);
        assert_eq!(v["usage"]["total_tokens"], 7);
        let mut events = Vec::new();
        opening_events(&mut events, &reply);
        closing_events(&mut events, &reply, b" x", 6);
        let text = String::from_utf8(events).unwrap();
        let mut sequence = Vec::new();
        for block in text.split("\n\n").filter(|b| !b.is_empty()) {
            let (name, data) = block.split_once('\n').unwrap();
            let v: serde_json::Value =
                serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(
                Some(v["type"].as_str().unwrap()),
                name.strip_prefix("event: ")
            );
            sequence.push(v["sequence_number"].as_u64().unwrap());
        }
        assert_eq!(sequence, [0, 1, 2, 3, 6, 7, 8, 9]);
        assert!(text.ends_with("\"status\":\"incomplete\",\"error\":null,\"incomplete_details\":{\"reason\":\"max_output_tokens\"},\"instructions\":null,\"metadata\":{},\"parallel_tool_calls\":true,\"temperature\":1.0,\"top_p\":1.0,\"tool_choice\":\"auto\",\"tools\":[],\"text\":{\"format\":{\"type\":\"text\"}},\"output\":[{\"id\":\"msg_mock_1_7\",\"type\":\"message\",\"role\":\"assistant\",\"status\":\"completed\",\"content\":[{\"type\":\"output_text\",\"annotations\":[],\"text\":\" x\"}]}],\"usage\":{\"input_tokens\":5,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":2,\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":7}}}\n\n"));
        assert!(text.contains("event: response.incomplete\n"));
    }
}
