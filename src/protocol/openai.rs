//! OpenAI Chat Completions (`POST /v1/chat/completions`).
//!
//! Request: `model`, `messages` (system first when set), `max_tokens`,
//! `stream`, and with streaming `stream_options.include_usage` so the final
//! chunk carries the server's token counts. Response: non-streamed JSON with
//! `choices[0].message.content` and `usage`; or SSE chunks with
//! `choices[0].delta.content`, a last chunk with `usage` and empty
//! `choices`, and the `data: [DONE]` end marker.

use super::json::{Bad, Kind, Scanner};
use super::{Auth, EventKind, Protocol, ProtocolError, Reply, Role, TurnRequest};
use crate::http::sse;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

/// The OpenAI Chat Completions adapter.
#[derive(Debug)]
pub struct OpenAiChat;

struct Body<'a>(&'a TurnRequest<'a>);

struct Messages<'a>(&'a TurnRequest<'a>);

struct Msg<'a> {
    role: &'static str,
    content: &'a str,
}

impl Serialize for Msg<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("role", self.role)?;
        map.serialize_entry("content", self.content)?;
        map.end()
    }
}

impl Serialize for Messages<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut seq = s.serialize_seq(Some(r.messages.len() + usize::from(r.system.is_some())))?;
        if let Some(system) = r.system {
            seq.serialize_element(&Msg {
                role: "system",
                content: system,
            })?;
        }
        for m in r.messages {
            let role = match m.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            seq.serialize_element(&Msg {
                role,
                content: &m.content,
            })?;
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

impl Serialize for Body<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("model", r.model)?;
        map.serialize_entry("messages", &Messages(r))?;
        map.serialize_entry("max_tokens", &r.max_tokens)?;
        map.serialize_entry("stream", &r.stream)?;
        if r.stream {
            map.serialize_entry(
                "stream_options",
                &StreamOptions {
                    include_usage: true,
                },
            )?;
        }
        map.end()
    }
}

/// Which object holds a choice's text: `message` (non-streamed) or
/// `delta` (streamed chunk).
#[derive(Clone, Copy)]
enum Holder {
    Message,
    Delta,
}

/// What one body or chunk said.
#[derive(Default)]
struct Parsed<'a> {
    content: bool,
    finished: bool,
    error: bool,
    /// The last text pushed, and how many were.
    text: &'a [u8],
    texts: u32,
    /// A `usage` object was read.
    usage: bool,
}

impl Parsed<'_> {
    /// Whether one piece of text was the chunk's only effect, so its
    /// frame may be remembered (`memo`).
    fn text_only(&self) -> bool {
        self.texts == 1 && !self.finished && !self.error && !self.usage
    }
}

/// Reads `{choices:[{message|delta:{content}, finish_reason}], usage:{..},
/// error}` from one document, skipping everything else.
fn parse_document<'a>(
    bytes: &'a [u8],
    holder: Holder,
    reply: &mut Reply,
) -> Result<Parsed<'a>, ProtocolError> {
    let mut parsed = Parsed::default();
    let mut s = Scanner::new(bytes);
    let result = s.object(|s, key| match key.raw {
        b"choices" if s.peek()? == Kind::Array => s.array(|s, index| {
            if index == 0 && s.peek()? == Kind::Object {
                parse_choice(s, holder, reply, &mut parsed)
            } else {
                s.skip()
            }
        }),
        b"usage" if s.peek()? == Kind::Object => {
            parsed.usage = true;
            parse_usage(s, reply)
        }
        b"error" => {
            parsed.error = s.peek()? != Kind::Null;
            s.skip()
        }
        _ => s.skip(),
    });
    result
        .and_then(|_| s.finish())
        .map_err(|_| ProtocolError::BadJson)?;
    Ok(parsed)
}

/// `usage`: prompt, completion and cached prompt tokens.
fn parse_usage(s: &mut Scanner<'_>, reply: &mut Reply) -> Result<(), Bad> {
    s.object(|s, key| {
        match key.raw {
            b"prompt_tokens" => reply.prompt_tokens = s.u64_or_null()?.or(reply.prompt_tokens),
            b"completion_tokens" => {
                reply.completion_tokens = s.u64_or_null()?.or(reply.completion_tokens)
            }
            b"prompt_tokens_details" if s.peek()? == Kind::Object => s.object(|s, key| {
                if key.raw == b"cached_tokens" {
                    reply.cached_tokens = s.u64_or_null()?.or(reply.cached_tokens);
                    Ok(())
                } else {
                    s.skip()
                }
            })?,
            _ => s.skip()?,
        }
        Ok(())
    })
}

fn parse_choice<'a>(
    s: &mut Scanner<'a>,
    holder: Holder,
    reply: &mut Reply,
    parsed: &mut Parsed<'a>,
) -> Result<(), Bad> {
    let holder_key: &[u8] = match holder {
        Holder::Message => b"message",
        Holder::Delta => b"delta",
    };
    s.object(|s, key| {
        if key.raw == holder_key && s.peek()? == Kind::Object {
            s.object(|s, key| {
                if key.raw == b"content" && s.peek()? == Kind::String {
                    let text = s.string()?;
                    if !text.raw.is_empty() {
                        parsed.content = true;
                        parsed.text = text.raw;
                        parsed.texts += 1;
                        reply.push_json_text(&text);
                    }
                    Ok(())
                } else {
                    s.skip()
                }
            })
        } else if key.raw == b"finish_reason" {
            parsed.finished |= s.string_or_null()?.is_some();
            Ok(())
        } else {
            s.skip()
        }
    })
}

impl Protocol for OpenAiChat {
    fn name(&self) -> &'static str {
        "openai-chat"
    }

    fn default_path(&self) -> &'static str {
        "/v1/chat/completions"
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
        let parsed = parse_document(body, Holder::Message, reply)?;
        reply.finished |= parsed.finished;
        reply.saw_end = true;
        Ok(())
    }

    fn parse_event(
        &self,
        event: sse::Event<'_>,
        reply: &mut Reply,
    ) -> Result<EventKind, ProtocolError> {
        let data = event.data;
        if data == b"[DONE]" {
            reply.saw_end = true;
            return Ok(EventKind::End);
        }
        if let Some((text, kind)) = reply.memo.recall(event) {
            reply.push_json_text(&text);
            return Ok(kind);
        }
        let parsed = parse_document(data, Holder::Delta, reply)?;
        if parsed.error {
            return Err(ProtocolError::ErrorEvent);
        }
        reply.finished |= parsed.finished;
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

    fn event(data: &str) -> sse::Event<'_> {
        sse::Event {
            name: b"",
            data: data.as_bytes(),
        }
    }

    #[test]
    fn body_has_every_field() {
        let messages = vec![
            Message {
                role: Role::User,
                content: "hi \"there\"".into(),
            },
            Message {
                role: Role::Assistant,
                content: "hello".into(),
            },
        ];
        let request = TurnRequest {
            model: "gpt-4o-mini",
            system: Some("be brief"),
            messages: &messages,
            max_tokens: 64,
            stream: true,
            previous_response_id: None,
        };
        let mut out = Vec::new();
        OpenAiChat.write_body(&request, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "gpt-4o-mini");
        assert_eq!(v["messages"][0]["role"], "system");
        assert_eq!(v["messages"][0]["content"], "be brief");
        assert_eq!(v["messages"][1]["content"], "hi \"there\"");
        assert_eq!(v["messages"][2]["role"], "assistant");
        assert_eq!(v["max_tokens"], 64);
        assert_eq!(v["stream"], true);
        assert_eq!(v["stream_options"]["include_usage"], true);

        let request = TurnRequest {
            system: None,
            stream: false,
            ..request
        };
        out.clear();
        OpenAiChat.write_body(&request, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["messages"].as_array().unwrap().len(), 2);
        assert!(v.get("stream_options").is_none());
    }

    #[test]
    fn non_stream_body() {
        let body = br#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hello\nworld"},"finish_reason":"stop"},{"index":1,"message":{"content":"ignored"}}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":8}}}"#;
        let mut reply = Reply {
            keep_content: true,
            ..Reply::default()
        };
        OpenAiChat.parse_body(body, &mut reply).unwrap();
        assert_eq!(reply.content, b"Hello\nworld");
        assert_eq!(reply.content_bytes, 11);
        assert_eq!(reply.prompt_tokens, Some(12));
        assert_eq!(reply.completion_tokens, Some(3));
        assert_eq!(reply.cached_tokens, Some(8));
        assert!(reply.finished);
    }

    #[test]
    fn non_stream_without_usage_or_choices() {
        let mut reply = Reply::default();
        OpenAiChat
            .parse_body(br#"{"choices":[]}"#, &mut reply)
            .unwrap();
        assert!(reply.content.is_empty());
        assert_eq!(reply.completion_tokens, None);
        assert_eq!(
            OpenAiChat.parse_body(b"not json", &mut reply),
            Err(ProtocolError::BadJson)
        );
        assert_eq!(
            OpenAiChat.parse_body(b"", &mut reply),
            Err(ProtocolError::BadJson)
        );
    }

    #[test]
    fn stream_chunks() {
        let mut reply = Reply {
            keep_content: true,
            ..Reply::default()
        };
        let role = r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#;
        assert_eq!(
            OpenAiChat.parse_event(event(role), &mut reply),
            Ok(EventKind::Other)
        );
        let tok = r#"{"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}"#;
        assert_eq!(
            OpenAiChat.parse_event(event(tok), &mut reply),
            Ok(EventKind::Content)
        );
        let tok =
            r#"{"choices":[{"index":0,"delta":{"content":"lo \u00e9"},"finish_reason":null}]}"#;
        assert_eq!(
            OpenAiChat.parse_event(event(tok), &mut reply),
            Ok(EventKind::Content)
        );
        let fin = r#"{"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}"#;
        assert_eq!(
            OpenAiChat.parse_event(event(fin), &mut reply),
            Ok(EventKind::Other)
        );
        let usage =
            r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#;
        assert_eq!(
            OpenAiChat.parse_event(event(usage), &mut reply),
            Ok(EventKind::Other)
        );
        assert!(!reply.saw_end);
        assert_eq!(
            OpenAiChat.parse_event(event("[DONE]"), &mut reply),
            Ok(EventKind::End)
        );
        assert_eq!(reply.content, "Hello é".as_bytes());
        assert_eq!(reply.prompt_tokens, Some(5));
        assert_eq!(reply.completion_tokens, Some(2));
        assert!(reply.finished);
        assert!(reply.saw_end);
    }

    #[test]
    fn stream_errors() {
        let mut reply = Reply::default();
        let err = r#"{"error":{"message":"overloaded","type":"server_error"}}"#;
        assert_eq!(
            OpenAiChat.parse_event(event(err), &mut reply),
            Err(ProtocolError::ErrorEvent)
        );
        assert_eq!(
            OpenAiChat.parse_event(event("{bad"), &mut reply),
            Err(ProtocolError::BadJson)
        );
        assert_eq!(
            OpenAiChat.parse_event(event(r#"{"choices":null}"#), &mut reply),
            Ok(EventKind::Other)
        );
    }

    #[test]
    fn registry_finds_it() {
        assert_eq!(
            crate::protocol::by_name("openai-chat").unwrap().name(),
            "openai-chat"
        );
        assert_eq!(
            crate::protocol::by_name("openai").unwrap().name(),
            "openai-chat"
        );
        assert!(crate::protocol::by_name("smtp").is_none());
    }
}
