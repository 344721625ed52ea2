//! The shortcut for a streamed event shaped like the one before it.
//!
//! The events of one LLM stream are nearly all alike: the same id, model,
//! timestamps and nesting around one string of new text. Scanning each of
//! them in full was the largest part of the engine's CPU on a streamed
//! reply (`benches/README.md`). So an adapter that has parsed an event in
//! full, and found that its only effect on the `Reply` was one piece of
//! text, remembers the bytes around that text: the frame. A later event
//! whose bytes are that frame with another well-formed string in the hole
//! is the same document but for the text, so it means the same thing but
//! for the text: the adapter pushes the text and returns the kind it
//! returned before, without scanning the rest.
//!
//! Why that is exact: the scanner's path through a document depends only
//! on its bytes. Both documents have the same bytes up to the text's
//! opening quote, so the scanner reaches it in the same state; the new
//! text is checked to be one complete JSON string that ends exactly where
//! the frame's tail begins, so the scanner leaves it in the same state
//! again, and the identical tail follows. The adapters' only use of the
//! text's value is whether it is empty, and an empty text never matches.
//! Anything else (another key, another order, a number that changed, a
//! different event name) fails the byte comparison and takes the full
//! parse.

use super::json::{Scanner, Str};
use super::EventKind;
use crate::http::sse::Event;
use crate::limits;

/// The frame of the last event remembered, or nothing.
#[derive(Debug, Default, Clone)]
pub struct EventMemo {
    /// The event's name (`event:` field).
    name: Vec<u8>,
    /// The data's bytes before the text and after it: the head ends with
    /// the text's opening quote, the tail starts with its closing one.
    frame: Vec<u8>,
    /// Where the head ends in `frame`.
    head: usize,
    /// What the event meant; `None` when nothing is remembered.
    kind: Option<EventKind>,
}

impl EventMemo {
    /// Remembers `event`, whose full parse found `text` (a slice of its
    /// data, the raw bytes between two quotes) as its only effect and
    /// returned `kind`. A frame past `limits::EVENT_MEMO_FRAME_BYTES_MAX`,
    /// or a `text` that is not inside the data, is not remembered.
    pub fn remember(&mut self, event: Event<'_>, text: &[u8], kind: EventKind) {
        self.kind = None;
        let data = event.data;
        let start = (text.as_ptr() as usize).wrapping_sub(data.as_ptr() as usize);
        let end = start.wrapping_add(text.len());
        let framed = start >= 1
            && end < data.len()
            && data[start - 1] == b'"'
            && data[end] == b'"'
            && data.len() - text.len() <= limits::EVENT_MEMO_FRAME_BYTES_MAX;
        if !framed || text.is_empty() {
            return;
        }
        self.name.clear();
        self.name.extend_from_slice(event.name);
        self.frame.clear();
        self.frame.extend_from_slice(&data[..start]);
        self.frame.extend_from_slice(&data[end..]);
        self.head = start;
        self.kind = Some(kind);
    }

    /// The text of `event` and the kind to return, when `event` is the
    /// remembered frame around a complete, non-empty JSON string.
    pub fn recall<'a>(&self, event: Event<'a>) -> Option<(Str<'a>, EventKind)> {
        let kind = self.kind?;
        let data = event.data;
        let (head, tail) = self.frame.split_at(self.head);
        if data.len() <= self.frame.len()
            || !same_bytes(event.name, &self.name)
            || !data.starts_with(head)
            || !data.ends_with(tail)
        {
            return None;
        }
        let (text, after) = Scanner::string_at(data, head.len() - 1).ok()?;
        (after == data.len() - tail.len() + 1).then_some((text, kind))
    }
}

/// `a == b`, without calling `memcmp` for two empty slices: glibc's
/// AVX-512 `memcmp` loads from the pointers under an empty mask, and an
/// empty slice's pointer is dangling, so each such call took a page-fault
/// assist (half the parse benchmark's time before this test).
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && (a.is_empty() || a == b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::anthropic::AnthropicMessages;
    use crate::protocol::openai::OpenAiChat;
    use crate::protocol::{Protocol, Reply};

    fn event<'a>(name: &'a str, data: &'a str) -> Event<'a> {
        Event {
            name: name.as_bytes(),
            data: data.as_bytes(),
        }
    }

    fn remembered(data: &str, text: &str) -> EventMemo {
        let at = data.find(&format!("\"{text}\"")).unwrap() + 1;
        let mut memo = EventMemo::default();
        memo.remember(
            event("", data),
            &data.as_bytes()[at..at + text.len()],
            EventKind::Content,
        );
        memo
    }

    const FIRST: &str = r#"{"id":"c1","choices":[{"delta":{"content":"Hello"},"x":null}]}"#;

    #[test]
    fn the_same_frame_around_another_string_is_recalled() {
        let memo = remembered(FIRST, "Hello");
        let next = r#"{"id":"c1","choices":[{"delta":{"content":" wor\"ld"},"x":null}]}"#;
        let (text, kind) = memo.recall(event("", next)).unwrap();
        assert_eq!(text.raw, br#" wor\"ld"#);
        assert!(text.escaped);
        assert_eq!(kind, EventKind::Content);
    }

    #[test]
    fn anything_but_a_complete_string_in_the_hole_is_not() {
        let memo = remembered(FIRST, "Hello");
        for data in [
            // Another id, another key, an empty text.
            r#"{"id":"c2","choices":[{"delta":{"content":"Hello"},"x":null}]}"#,
            r#"{"id":"c1","choices":[{"delta":{"content":"Hello"},"y":null}]}"#,
            r#"{"id":"c1","choices":[{"delta":{"content":""},"x":null}]}"#,
            // The hole holds a quote that closes the string early, so the
            // frame's tail would be read as something else.
            r#"{"id":"c1","choices":[{"delta":{"content":"a","b":"c"},"x":null}]}"#,
            // A trailing backslash escapes the tail's quote.
            r#"{"id":"c1","choices":[{"delta":{"content":"ab\"},"x":null}]}"#,
            // A bad escape.
            r#"{"id":"c1","choices":[{"delta":{"content":"a\q"},"x":null}]}"#,
        ] {
            assert!(memo.recall(event("", data)).is_none(), "{data}");
        }
        assert!(memo.recall(event("other", FIRST)).is_none());
        assert!(EventMemo::default().recall(event("", FIRST)).is_none());
    }

    #[test]
    fn a_text_outside_the_data_or_an_empty_one_is_not_remembered() {
        let mut memo = EventMemo::default();
        memo.remember(event("", FIRST), b"Hello", EventKind::Content);
        assert!(memo.recall(event("", FIRST)).is_none());
        let memo = remembered(r#"{"content":"","x":1}"#, "");
        assert!(memo.recall(event("", r#"{"content":"a","x":1}"#)).is_none());
    }

    /// Whatever the hole holds, a recalled event means what the full
    /// parse says it means: random texts, some malformed, through an
    /// adapter with and without its memo.
    fn agrees_with_the_full_parse(protocol: &dyn Protocol, name: &str, frame: (&str, &str)) {
        let mut rng = crate::rng::Rng::new(7);
        let alphabet = [b'a', b' ', b'"', b'\\', b'n', b'u', b'0', b'}', b','];
        let warm = format!("{}w{}", frame.0, frame.1);
        let mut recalled = 0;
        for _ in 0..4000 {
            let len = 1 + rng.below(6) as usize;
            let text: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
                .collect();
            let data = format!("{}{}{}", frame.0, String::from_utf8(text).unwrap(), frame.1);
            let mut fast = Reply::default();
            protocol.parse_event(event(name, &warm), &mut fast).unwrap();
            recalled += usize::from(fast.memo.recall(event(name, &data)).is_some());
            let a = protocol.parse_event(event(name, &data), &mut fast);
            let mut slow = Reply::default();
            protocol.parse_event(event(name, &warm), &mut slow).unwrap();
            slow.memo = EventMemo::default();
            let b = protocol.parse_event(event(name, &data), &mut slow);
            assert_eq!(a, b, "{data}");
            assert_eq!(fast.content_bytes, slow.content_bytes, "{data}");
            assert_eq!(fast.finished, slow.finished, "{data}");
        }
        assert!(recalled > 400, "only {recalled} recalled");
    }

    #[test]
    fn recall_agrees_with_the_full_parse_openai() {
        let frame = (
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":""#,
            r#""},"finish_reason":null}]}"#,
        );
        agrees_with_the_full_parse(&OpenAiChat, "", frame);
    }

    #[test]
    fn recall_agrees_with_the_full_parse_anthropic() {
        let frame = (
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":""#,
            r#""}}"#,
        );
        agrees_with_the_full_parse(&AnthropicMessages, "content_block_delta", frame);
    }

    /// Events that say more than text are never remembered: usage, a
    /// finish reason, a stop reason.
    #[test]
    fn events_with_other_effects_are_not_remembered() {
        let mut reply = Reply::default();
        for data in [
            r#"{"choices":[{"delta":{"content":"a"},"finish_reason":"stop"}]}"#,
            r#"{"choices":[{"delta":{"content":"a"}}],"usage":{"completion_tokens":3}}"#,
            r#"{"choices":[{"delta":{"content":"a","content":"b"}}]}"#,
        ] {
            OpenAiChat.parse_event(event("", data), &mut reply).unwrap();
            assert!(reply.memo.kind.is_none(), "{data}");
        }
        let data = r#"{"type":"message_delta","delta":{"text":"a","stop_reason":"end_turn"}}"#;
        AnthropicMessages
            .parse_event(event("message_delta", data), &mut reply)
            .unwrap();
        assert!(reply.memo.kind.is_none());
    }
}
