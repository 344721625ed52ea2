//! OpenAI Responses (`POST /v1/responses`).
//!
//! Request: `model`, `input` (the conversation as message items, the
//! assistant's replies fed back), `instructions` for the system prompt,
//! `max_output_tokens`, `stream`; in the stateful mode `previous_response_id`
//! and only the new user message, so the server keeps the history.
//!
//! Response: non-streamed, a `response` object whose `output[]` items hold
//! `content[]` parts of type `output_text`, with `usage.input_tokens`,
//! `output_tokens`, `input_tokens_details.cached_tokens` and
//! `output_tokens_details.reasoning_tokens`. Streamed, typed SSE events
//! (`event:` line and a `type` field, each with a `sequence_number`): text
//! arrives in `response.output_text.delta`, reasoning in
//! `response.reasoning_*.delta`, and the stream ends with
//! `response.completed` (or `response.incomplete`, when `max_output_tokens`
//! cut it), whose `response` carries the usage. `response.failed` and
//! `error` events are errors inside a 200 stream.

use super::json::{Bad, Kind, Scanner, Str};
use super::{Auth, EventKind, Protocol, ProtocolError, Reply, Role, TurnRequest};
use crate::http::sse;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

/// The OpenAI Responses adapter.
#[derive(Debug)]
pub struct OpenAiResponses;

struct Body<'a>(&'a TurnRequest<'a>);

struct Input<'a>(&'a TurnRequest<'a>);

struct Item<'a> {
    role: &'static str,
    content: &'a str,
}

impl Serialize for Item<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("type", "message")?;
        map.serialize_entry("role", self.role)?;
        map.serialize_entry("content", self.content)?;
        map.end()
    }
}

impl Serialize for Input<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.messages.len()))?;
        for m in self.0.messages {
            let role = match m.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            seq.serialize_element(&Item {
                role,
                content: &m.content,
            })?;
        }
        seq.end()
    }
}

impl Serialize for Body<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("model", r.model)?;
        if let Some(system) = r.system {
            map.serialize_entry("instructions", system)?;
        }
        map.serialize_entry("input", &Input(r))?;
        if let Some(id) = r.previous_response_id {
            map.serialize_entry("previous_response_id", id)?;
        }
        map.serialize_entry("max_output_tokens", &r.max_tokens)?;
        map.serialize_entry("stream", &r.stream)?;
        map.end()
    }
}

/// Reads a `usage` object.
fn parse_usage(s: &mut Scanner<'_>, reply: &mut Reply) -> Result<(), Bad> {
    s.object(|s, key| {
        match key.raw {
            b"input_tokens" => reply.prompt_tokens = s.u64_or_null()?.or(reply.prompt_tokens),
            b"output_tokens" => {
                reply.completion_tokens = s.u64_or_null()?.or(reply.completion_tokens)
            }
            b"input_tokens_details" if s.peek()? == Kind::Object => {
                detail(s, b"cached_tokens", &mut reply.cached_tokens)?
            }
            b"output_tokens_details" if s.peek()? == Kind::Object => {
                detail(s, b"reasoning_tokens", &mut reply.reasoning_tokens)?
            }
            _ => s.skip()?,
        }
        Ok(())
    })
}

/// Reads `{name: n}` out of a details object into `into`.
fn detail(s: &mut Scanner<'_>, name: &[u8], into: &mut Option<u64>) -> Result<(), Bad> {
    s.object(|s, key| {
        if key.raw == name {
            *into = s.u64_or_null()?.or(*into);
            Ok(())
        } else {
            s.skip()
        }
    })
}

/// Keeps the response id, when a caller needs it (`keep_content`: the
/// stateful mode sends it back as `previous_response_id`).
fn keep_id(reply: &mut Reply, id: &Str<'_>) {
    if reply.keep_content {
        reply.response_id.clear();
        id.decode_into(&mut reply.response_id);
    }
}

/// Reads a `response` object: its id, output text (when `with_output`),
/// usage and status. Returns whether any output text was found.
fn parse_response(s: &mut Scanner<'_>, reply: &mut Reply, with_output: bool) -> Result<bool, Bad> {
    let mut content = false;
    s.object(|s, key| {
        match key.raw {
            b"id" if s.peek()? == Kind::String => keep_id(reply, &s.string()?),
            b"output" if with_output && s.peek()? == Kind::Array => s.array(|s, _| {
                if s.peek()? == Kind::Object {
                    content |= parse_output_item(s, reply)?;
                    Ok(())
                } else {
                    s.skip()
                }
            })?,
            b"usage" if s.peek()? == Kind::Object => parse_usage(s, reply)?,
            b"status" if s.peek()? == Kind::String => {
                let status = s.string()?;
                reply.finished |= status.raw == b"completed" || status.raw == b"incomplete";
            }
            _ => s.skip()?,
        }
        Ok(())
    })?;
    Ok(content)
}

/// One `output[]` item: text from its `output_text` content parts (the
/// part's `type` may come before or after its `text`).
fn parse_output_item(s: &mut Scanner<'_>, reply: &mut Reply) -> Result<bool, Bad> {
    let mut content = false;
    s.object(|s, key| {
        if key.raw != b"content" || s.peek()? != Kind::Array {
            return s.skip();
        }
        s.array(|s, _| {
            if s.peek()? != Kind::Object {
                return s.skip();
            }
            let (mut text, mut output_text) = (None, false);
            s.object(|s, key| {
                match key.raw {
                    b"type" if s.peek()? == Kind::String => {
                        output_text = s.string()?.raw == b"output_text"
                    }
                    b"text" if s.peek()? == Kind::String => text = Some(s.string()?),
                    _ => s.skip()?,
                }
                Ok(())
            })?;
            if let (true, Some(text)) = (output_text, text) {
                if !text.raw.is_empty() {
                    content = true;
                    reply.push_json_text(&text);
                }
            }
            Ok(())
        })
    })?;
    Ok(content)
}

/// The stream events whose kind this adapter tells apart.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Type {
    TextDelta,
    ReasoningDelta,
    Done,
    Failed,
    Other,
}

fn event_type(name: &[u8]) -> Type {
    match name {
        b"response.output_text.delta" => Type::TextDelta,
        b"response.reasoning_text.delta"
        | b"response.reasoning_summary_text.delta"
        | b"response.reasoning.delta" => Type::ReasoningDelta,
        b"response.completed" | b"response.incomplete" => Type::Done,
        b"response.failed" | b"error" => Type::Failed,
        _ => Type::Other,
    }
}

/// Counts a gap in the stream's `sequence_number`s.
fn note_sequence(reply: &mut Reply, sequence: u64) {
    if let Some(last) = reply.last_sequence {
        if sequence != last.wrapping_add(1) {
            reply.sequence_gaps += sequence.saturating_sub(last.wrapping_add(1)).max(1);
        }
    }
    reply.last_sequence = Some(sequence);
}

impl Protocol for OpenAiResponses {
    fn name(&self) -> &'static str {
        "openai-responses"
    }

    fn default_path(&self) -> &'static str {
        "/v1/responses"
    }

    fn default_auth(&self) -> Auth {
        Auth::Bearer
    }

    fn fixed_headers(&self) -> &'static [(&'static str, &'static str)] {
        &[("Accept", "application/json, text/event-stream")]
    }

    fn write_body(&self, request: &TurnRequest<'_>, out: &mut Vec<u8>) {
        // Serializing into a Vec cannot fail: every key is a string and
        // every value a string, integer or bool.
        let _ = serde_json::to_writer(out, &Body(request));
    }

    fn parse_body(&self, body: &[u8], reply: &mut Reply) -> Result<(), ProtocolError> {
        let mut s = Scanner::new(body);
        parse_response(&mut s, reply, true)
            .and_then(|_| s.finish())
            .map_err(|_| ProtocolError::BadJson)?;
        reply.saw_end = true;
        Ok(())
    }

    fn parse_event(
        &self,
        event: sse::Event<'_>,
        reply: &mut Reply,
    ) -> Result<EventKind, ProtocolError> {
        // The `type` field decides (a gateway may drop `event:` lines); it
        // usually comes first, but the delta and response are read
        // whatever the order.
        let mut kind = event_type(event.name);
        let (mut delta, mut sequence) = (None, None);
        let mut s = Scanner::new(event.data);
        let result = s.object(|s, key| {
            match key.raw {
                b"type" if s.peek()? == Kind::String => kind = event_type(s.string()?.raw),
                b"sequence_number" => sequence = s.u64_or_null()?,
                b"delta" if s.peek()? == Kind::String => delta = Some(s.string()?),
                b"response" if s.peek()? == Kind::Object => {
                    parse_response(s, reply, false)?;
                }
                _ => s.skip()?,
            }
            Ok(())
        });
        result
            .and_then(|_| s.finish())
            .map_err(|_| ProtocolError::BadJson)?;
        if let Some(sequence) = sequence {
            note_sequence(reply, sequence);
        }
        match (kind, delta) {
            (Type::Failed, _) => Err(ProtocolError::ErrorEvent),
            (Type::Done, _) => {
                reply.saw_end = true;
                Ok(EventKind::End)
            }
            (Type::TextDelta, Some(text)) if !text.raw.is_empty() => {
                reply.push_json_text(&text);
                Ok(EventKind::Content)
            }
            (Type::ReasoningDelta, Some(text)) if !text.raw.is_empty() => Ok(EventKind::Reasoning),
            _ => Ok(EventKind::Other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Message;

    fn event<'a>(name: &'a str, data: &'a str) -> sse::Event<'a> {
        sse::Event {
            name: name.as_bytes(),
            data: data.as_bytes(),
        }
    }

    fn history() -> Vec<Message> {
        vec![
            Message {
                role: Role::User,
                content: "hi".into(),
            },
            Message {
                role: Role::Assistant,
                content: "hello \"you\"".into(),
            },
            Message {
                role: Role::User,
                content: "more".into(),
            },
        ]
    }

    #[test]
    fn bodies_stateless_and_stateful() {
        let messages = history();
        let request = TurnRequest {
            model: "gpt-5",
            system: Some("be brief"),
            messages: &messages,
            max_tokens: 64,
            stream: true,
            previous_response_id: None,
        };
        let mut out = Vec::new();
        OpenAiResponses.write_body(&request, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "gpt-5");
        assert_eq!(v["instructions"], "be brief");
        assert_eq!(v["input"].as_array().unwrap().len(), 3);
        assert_eq!(v["input"][1]["role"], "assistant");
        assert_eq!(v["input"][1]["content"], "hello \"you\"");
        assert_eq!(v["input"][0]["type"], "message");
        assert_eq!(v["max_output_tokens"], 64);
        assert_eq!(v["stream"], true);
        assert!(v.get("previous_response_id").is_none());
        // Stateful: the new message alone, and the previous response's id.
        let request = TurnRequest {
            messages: &messages[2..],
            system: None,
            previous_response_id: Some("resp_1"),
            stream: false,
            ..request
        };
        out.clear();
        OpenAiResponses.write_body(&request, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["previous_response_id"], "resp_1");
        assert_eq!(v["input"].as_array().unwrap().len(), 1);
        assert_eq!(v["input"][0]["content"], "more");
        assert!(v.get("instructions").is_none());
    }

    #[test]
    fn non_stream_body() {
        let body = br#"{"id":"resp_7","object":"response","status":"incomplete",
            "incomplete_details":{"reason":"max_output_tokens"},
            "output":[{"type":"reasoning","id":"rs_1","summary":[]},
                      {"type":"message","role":"assistant","content":[
                        {"text":"Hello","type":"output_text","annotations":[]},
                        {"type":"refusal","refusal":"no"},
                        {"type":"output_text","text":" world"}]}],
            "usage":{"input_tokens":12,"input_tokens_details":{"cached_tokens":8},
                     "output_tokens":30,"output_tokens_details":{"reasoning_tokens":28},"total_tokens":42}}"#;
        let mut reply = Reply {
            keep_content: true,
            ..Reply::default()
        };
        OpenAiResponses.parse_body(body, &mut reply).unwrap();
        assert_eq!(reply.content, b"Hello world");
        assert_eq!(reply.response_id, b"resp_7");
        assert_eq!(reply.prompt_tokens, Some(12));
        assert_eq!(reply.cached_tokens, Some(8));
        assert_eq!(reply.completion_tokens, Some(30));
        assert_eq!(reply.reasoning_tokens, Some(28));
        assert!(reply.finished && reply.saw_end);
        assert_eq!(
            OpenAiResponses.parse_body(b"{\"output\": [", &mut reply),
            Err(ProtocolError::BadJson)
        );
    }

    #[test]
    fn stream_events_in_order_with_reasoning_and_gaps() {
        let mut reply = Reply {
            keep_content: true,
            ..Reply::default()
        };
        let mut feed =
            |name: &str, data: &str| OpenAiResponses.parse_event(event(name, data), &mut reply);
        let created = r#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_9","status":"in_progress","output":[]}}"#;
        assert_eq!(feed("response.created", created), Ok(EventKind::Other));
        let thinking =
            r#"{"type":"response.reasoning_summary_text.delta","sequence_number":1,"delta":"hmm"}"#;
        assert_eq!(feed("", thinking), Ok(EventKind::Reasoning));
        let empty = r#"{"type":"response.output_text.delta","sequence_number":2,"delta":""}"#;
        assert_eq!(
            feed("response.output_text.delta", empty),
            Ok(EventKind::Other)
        );
        // The delta before the type, and a skipped sequence number.
        let text = r#"{"delta":"Hi","type":"response.output_text.delta","sequence_number":4}"#;
        assert_eq!(
            feed("response.output_text.delta", text),
            Ok(EventKind::Content)
        );
        let done = r#"{"type":"response.output_text.done","sequence_number":5,"text":"Hi"}"#;
        assert_eq!(
            feed("response.output_text.done", done),
            Ok(EventKind::Other)
        );
        let completed = r#"{"type":"response.completed","sequence_number":6,"response":{"id":"resp_9","status":"completed",
            "output":[{"type":"message","content":[{"type":"output_text","text":"Hi"}]}],
            "usage":{"input_tokens":3,"output_tokens":2,"output_tokens_details":{"reasoning_tokens":1}}}}"#;
        assert_eq!(feed("response.completed", completed), Ok(EventKind::End));
        // Text is counted once, from the deltas, not again from the final
        // response.
        assert_eq!(reply.content, b"Hi");
        assert_eq!(reply.response_id, b"resp_9");
        assert_eq!(reply.completion_tokens, Some(2));
        assert_eq!(reply.reasoning_tokens, Some(1));
        assert_eq!(reply.sequence_gaps, 1);
        assert!(reply.saw_end && reply.finished);
    }

    #[test]
    fn stream_errors() {
        let mut reply = Reply::default();
        let failed = r#"{"type":"response.failed","sequence_number":3,"response":{"status":"failed","error":{"code":"server_error"}}}"#;
        assert_eq!(
            OpenAiResponses.parse_event(event("response.failed", failed), &mut reply),
            Err(ProtocolError::ErrorEvent)
        );
        let error =
            r#"{"type":"error","code":"rate_limit","message":"slow down","sequence_number":4}"#;
        assert_eq!(
            OpenAiResponses.parse_event(event("error", error), &mut reply),
            Err(ProtocolError::ErrorEvent)
        );
        assert_eq!(
            OpenAiResponses.parse_event(event("", "{bad"), &mut reply),
            Err(ProtocolError::BadJson)
        );
        assert!(!reply.saw_end);
        assert_eq!(
            crate::protocol::by_name("responses").unwrap().name(),
            "openai-responses"
        );
    }
}
