//! Anthropic Messages (`POST /v1/messages`).
//!
//! Request: `model`, `max_tokens`, a top-level `system` string, `messages`
//! and `stream`, with the `anthropic-version` header (the key goes in
//! `x-api-key` unless a scenario says `auth: bearer`). Response:
//! non-streamed JSON with `content[].text`, `stop_reason` and `usage`; or
//! an SSE stream of `message_start` (input usage), `content_block_start`,
//! `ping`, `content_block_delta` (`text_delta`), `content_block_stop`,
//! `message_delta` (stop reason, output usage), `message_stop` (the end
//! marker), and possibly `error` events.
//!
//! Events are recognised by the `type` field of their data, which the API
//! always sends, so a gateway that drops the `event:` lines still works.

use super::json::{Bad, Kind, Scanner, Str};
use super::{Auth, EventKind, Protocol, ProtocolError, Reply, Role, TurnRequest};
use crate::http::sse;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

/// The Anthropic Messages adapter.
#[derive(Debug)]
pub struct AnthropicMessages;

/// The API version sent unless a profile's headers set another.
pub const API_VERSION: &str = "2023-06-01";

struct Body<'a>(&'a TurnRequest<'a>);

struct Messages<'a>(&'a TurnRequest<'a>);

impl Serialize for Messages<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.messages.len()))?;
        for m in self.0.messages {
            let role = match m.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            let mut entry = std::collections::BTreeMap::new();
            entry.insert("role", role);
            entry.insert("content", m.content.as_str());
            seq.serialize_element(&entry)?;
        }
        seq.end()
    }
}

impl Serialize for Body<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("model", r.model)?;
        map.serialize_entry("max_tokens", &r.max_tokens)?;
        if let Some(system) = r.system {
            map.serialize_entry("system", system)?;
        }
        map.serialize_entry("messages", &Messages(r))?;
        map.serialize_entry("stream", &r.stream)?;
        map.end()
    }
}

/// What one body or event said.
#[derive(Default)]
struct Parsed<'a> {
    /// The `type` field was `error`, or an `error` object was present.
    error: bool,
    /// The `type` field was `message_stop`.
    stop: bool,
    /// Generated text was found.
    content: bool,
    /// The last text pushed, and how many were.
    text: &'a [u8],
    texts: u32,
    /// Usage or a stop reason was read into the reply.
    other: bool,
}

impl Parsed<'_> {
    /// Whether one piece of text was the event's only effect, so its
    /// frame may be remembered (`memo`).
    fn text_only(&self) -> bool {
        self.texts == 1 && !self.error && !self.stop && !self.other
    }
}

/// Reads the fields of a message, event or usage object that matter,
/// skipping everything else. Handles both the non-streamed message and
/// every event shape, since their fields do not collide.
fn parse_document<'a>(bytes: &'a [u8], reply: &mut Reply) -> Result<Parsed<'a>, ProtocolError> {
    let mut parsed = Parsed::default();
    let mut s = Scanner::new(bytes);
    let result = s.object(|s, key| match key.raw {
        b"type" => {
            if let Some(kind) = s.string_or_null()? {
                parsed.error |= kind.raw == b"error";
                parsed.stop |= kind.raw == b"message_stop";
            }
            Ok(())
        }
        // message_start wraps the message; its usage has the input count.
        b"message" if s.peek()? == Kind::Object => s.object(|s, key| match key.raw {
            b"usage" if s.peek()? == Kind::Object => {
                parsed.other = true;
                parse_usage(s, reply)
            }
            b"content" if s.peek()? == Kind::Array => parse_blocks(s, reply, &mut parsed),
            b"stop_reason" => stop_reason(s, reply, &mut parsed),
            _ => s.skip(),
        }),
        // The non-streamed message's content blocks.
        b"content" if s.peek()? == Kind::Array => parse_blocks(s, reply, &mut parsed),
        b"content_block" if s.peek()? == Kind::Object => parse_block(s, reply, &mut parsed),
        b"delta" if s.peek()? == Kind::Object => s.object(|s, key| match key.raw {
            b"text" if s.peek()? == Kind::String => {
                take_text(s.string()?, reply, &mut parsed);
                Ok(())
            }
            b"stop_reason" => stop_reason(s, reply, &mut parsed),
            _ => s.skip(),
        }),
        b"usage" if s.peek()? == Kind::Object => {
            parsed.other = true;
            parse_usage(s, reply)
        }
        b"stop_reason" => stop_reason(s, reply, &mut parsed),
        b"error" => {
            parsed.error |= s.peek()? != Kind::Null;
            s.skip()
        }
        _ => s.skip(),
    });
    result
        .and_then(|_| s.finish())
        .map_err(|_| ProtocolError::BadJson)?;
    Ok(parsed)
}

fn parse_blocks<'a>(
    s: &mut Scanner<'a>,
    reply: &mut Reply,
    parsed: &mut Parsed<'a>,
) -> Result<(), Bad> {
    s.array(|s, _| {
        if s.peek()? == Kind::Object {
            parse_block(s, reply, parsed)
        } else {
            s.skip()
        }
    })
}

/// A content block: only `text` blocks carry generated text (tool input
/// and thinking use other keys).
fn parse_block<'a>(
    s: &mut Scanner<'a>,
    reply: &mut Reply,
    parsed: &mut Parsed<'a>,
) -> Result<(), Bad> {
    s.object(|s, key| {
        if key.raw == b"text" && s.peek()? == Kind::String {
            take_text(s.string()?, reply, parsed);
            Ok(())
        } else {
            s.skip()
        }
    })
}

fn take_text<'a>(text: Str<'a>, reply: &mut Reply, parsed: &mut Parsed<'a>) {
    if text.raw.is_empty() {
        return;
    }
    parsed.content = true;
    parsed.text = text.raw;
    parsed.texts += 1;
    reply.push_json_text(&text);
}

fn stop_reason(s: &mut Scanner<'_>, reply: &mut Reply, parsed: &mut Parsed<'_>) -> Result<(), Bad> {
    let stopped = s.string_or_null()?.is_some();
    reply.finished |= stopped;
    parsed.other |= stopped;
    Ok(())
}

/// `usage`: input tokens are split into uncached, cache-write and
/// cache-read parts; the prompt size is their sum. `output_tokens` in
/// `message_delta` is cumulative, so the last value wins.
fn parse_usage(s: &mut Scanner<'_>, reply: &mut Reply) -> Result<(), Bad> {
    s.object(|s, key| {
        let add_prompt = |reply: &mut Reply, n: Option<u64>| {
            if let Some(n) = n {
                reply.prompt_tokens = Some(reply.prompt_tokens.unwrap_or(0) + n);
            }
        };
        match key.raw {
            b"input_tokens" | b"cache_creation_input_tokens" => {
                let n = s.u64_or_null()?;
                add_prompt(reply, n);
            }
            b"cache_read_input_tokens" => {
                let n = s.u64_or_null()?;
                add_prompt(reply, n);
                if let Some(n) = n {
                    reply.cached_tokens = Some(reply.cached_tokens.unwrap_or(0) + n);
                }
            }
            b"output_tokens" => {
                reply.completion_tokens = s.u64_or_null()?.or(reply.completion_tokens);
            }
            _ => s.skip()?,
        }
        Ok(())
    })
}

impl Protocol for AnthropicMessages {
    fn name(&self) -> &'static str {
        "anthropic"
    }

    fn default_path(&self) -> &'static str {
        "/v1/messages"
    }

    fn default_auth(&self) -> Auth {
        Auth::XApiKey
    }

    fn fixed_headers(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("Accept", "application/json, text/event-stream"),
            ("anthropic-version", API_VERSION),
        ]
    }

    fn write_body(&self, request: &TurnRequest<'_>, out: &mut Vec<u8>) {
        // Serializing into a Vec cannot fail: every key is a string and
        // every value a string, integer or bool.
        let _ = serde_json::to_writer(out, &Body(request));
    }

    fn parse_body(&self, body: &[u8], reply: &mut Reply) -> Result<(), ProtocolError> {
        // A message's usage is reported once; `message_start` in a stream
        // is the only place input tokens arrive, so no double counting.
        let parsed = parse_document(body, reply)?;
        if parsed.error {
            return Err(ProtocolError::ErrorEvent);
        }
        reply.saw_end = true;
        Ok(())
    }

    fn parse_event(
        &self,
        event: sse::Event<'_>,
        reply: &mut Reply,
    ) -> Result<EventKind, ProtocolError> {
        if event.name == b"ping" || event.data.is_empty() {
            return Ok(EventKind::Other);
        }
        if let Some((text, kind)) = reply.memo.recall(event) {
            reply.push_json_text(&text);
            return Ok(kind);
        }
        // message_delta repeats input counts in newer API versions; keep
        // the prompt total from message_start only.
        let prompt_before = reply.prompt_tokens;
        let cached_before = reply.cached_tokens;
        let parsed = parse_document(event.data, reply)?;
        if parsed.error || event.name == b"error" {
            return Err(ProtocolError::ErrorEvent);
        }
        if prompt_before.is_some() {
            reply.prompt_tokens = prompt_before;
            reply.cached_tokens = cached_before;
        }
        if parsed.stop {
            reply.saw_end = true;
            return Ok(EventKind::End);
        }
        if parsed.text_only() {
            reply.memo.remember(event, parsed.text, EventKind::Content);
        }
        Ok(if parsed.content {
            EventKind::Content
        } else {
            EventKind::Other
        })
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

    #[test]
    fn body_has_every_field() {
        let messages = vec![
            Message {
                role: Role::User,
                content: "hi".into(),
            },
            Message {
                role: Role::Assistant,
                content: "hello \"you\"".into(),
            },
        ];
        let request = TurnRequest {
            model: "claude-sonnet",
            system: Some("be brief"),
            messages: &messages,
            max_tokens: 99,
            stream: true,
            previous_response_id: None,
        };
        let mut out = Vec::new();
        AnthropicMessages.write_body(&request, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "claude-sonnet");
        assert_eq!(v["system"], "be brief");
        assert_eq!(v["max_tokens"], 99);
        assert_eq!(v["stream"], true);
        assert_eq!(v["messages"][0]["role"], "user");
        assert_eq!(v["messages"][1]["content"], "hello \"you\"");
        let request = TurnRequest {
            system: None,
            ..request
        };
        out.clear();
        AnthropicMessages.write_body(&request, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v.get("system").is_none());
    }

    #[test]
    fn non_stream_message() {
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[{"type":"text","text":"Hello"},{"type":"tool_use","id":"t","name":"x","input":{"text":"no"}},{"type":"text","text":" there"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":2}}"#;
        let mut reply = Reply {
            keep_content: true,
            ..Reply::default()
        };
        AnthropicMessages.parse_body(body, &mut reply).unwrap();
        assert_eq!(reply.content, b"Hello there");
        assert_eq!(reply.prompt_tokens, Some(15));
        assert_eq!(reply.cached_tokens, Some(5));
        assert_eq!(reply.completion_tokens, Some(2));
        assert!(reply.finished);
        let mut reply = Reply::default();
        assert_eq!(
            AnthropicMessages.parse_body(
                br#"{"type":"error","error":{"type":"overloaded_error","message":"x"}}"#,
                &mut reply
            ),
            Err(ProtocolError::ErrorEvent)
        );
        assert_eq!(
            AnthropicMessages.parse_body(b"{", &mut reply),
            Err(ProtocolError::BadJson)
        );
    }

    #[test]
    fn stream_events_in_order() {
        let mut reply = Reply {
            keep_content: true,
            ..Reply::default()
        };
        let steps = [
            (
                "message_start",
                r#"{"type":"message_start","message":{"id":"m","type":"message","role":"assistant","content":[],"model":"x","stop_reason":null,"usage":{"input_tokens":25,"output_tokens":1}}}"#,
                EventKind::Other,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
                EventKind::Other,
            ),
            ("ping", r#"{"type":"ping"}"#, EventKind::Other),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}"#,
                EventKind::Content,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"lo \u00e9"}}"#,
                EventKind::Content,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\""}}"#,
                EventKind::Other,
            ),
            (
                "content_block_stop",
                r#"{"type":"content_block_stop","index":0}"#,
                EventKind::Other,
            ),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":25,"output_tokens":15}}"#,
                EventKind::Other,
            ),
        ];
        for (name, data, kind) in steps {
            assert_eq!(
                AnthropicMessages.parse_event(event(name, data), &mut reply),
                Ok(kind),
                "{name}"
            );
        }
        assert!(!reply.saw_end);
        assert_eq!(
            AnthropicMessages.parse_event(
                event("message_stop", r#"{"type":"message_stop"}"#),
                &mut reply
            ),
            Ok(EventKind::End)
        );
        assert!(reply.saw_end && reply.finished);
        assert_eq!(reply.content, "Hello é".as_bytes());
        assert_eq!(reply.prompt_tokens, Some(25));
        assert_eq!(reply.completion_tokens, Some(15));
    }

    #[test]
    fn stream_error_event() {
        let mut reply = Reply::default();
        assert_eq!(
            AnthropicMessages.parse_event(
                event(
                    "error",
                    r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
                ),
                &mut reply
            ),
            Err(ProtocolError::ErrorEvent)
        );
        // Without the event line, the data's type still says it.
        assert_eq!(
            AnthropicMessages.parse_event(
                event("", r#"{"type":"error","error":{"type":"api_error"}}"#),
                &mut reply
            ),
            Err(ProtocolError::ErrorEvent)
        );
        assert_eq!(
            AnthropicMessages.parse_event(event("content_block_delta", "{oops"), &mut reply),
            Err(ProtocolError::BadJson)
        );
    }

    #[test]
    fn registry_finds_it() {
        for name in ["anthropic", "anthropic-messages", "messages"] {
            assert_eq!(crate::protocol::by_name(name).unwrap().name(), "anthropic");
        }
    }
}
