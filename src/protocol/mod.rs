//! Wire-format adapters and their registry.
//!
//! An adapter knows one API's request body and response shapes; it knows
//! nothing of sockets, timing or statistics. The engine hands it a
//! `TurnRequest` to encode, and each complete non-streamed body or SSE event
//! to decode into a `Reply`. It tells the engine which events carry content,
//! and the engine owns every timestamp, so TTFT and ITL mean the same thing
//! for every protocol.
//!
//! Adding a protocol is one new module and one line in `REGISTRY`: OpenAI
//! Chat Completions (`openai`), Anthropic Messages (`anthropic`) and OpenAI
//! Responses (`responses`) are there today.

pub mod anthropic;
pub mod json;
pub mod memo;
pub mod openai;
pub mod responses;

use crate::http::sse;
use std::fmt;

/// A message role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The user.
    User,
    /// The model.
    Assistant,
}

/// One message of a conversation's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: String,
}

/// Everything an adapter needs to encode one request.
#[derive(Debug, Clone, Copy)]
pub struct TurnRequest<'a> {
    /// Model name sent to the gateway.
    pub model: &'a str,
    /// System prompt, if any.
    pub system: Option<&'a str>,
    /// The conversation so far, ending with the user's new message.
    pub messages: &'a [Message],
    /// Output token cap.
    pub max_tokens: u32,
    /// Ask for an SSE stream.
    pub stream: bool,
    /// Stateful mode (OpenAI Responses): the previous response's id, sent
    /// with only the new user message; the server keeps the history.
    pub previous_response_id: Option<&'a str>,
}

/// What an adapter found in a response. Reused across requests by one
/// virtual user; `clear` keeps the buffers' capacity.
#[derive(Debug, Default, Clone)]
pub struct Reply {
    /// Keep the generated text in `content` (a multi-turn user feeds it
    /// back); off, only `content_bytes` is counted, saving a copy.
    pub keep_content: bool,
    /// The generated text (joined deltas) when `keep_content` is set.
    /// Bounded by `limits::BODY_BYTES_MAX`.
    pub content: Vec<u8>,
    /// Content bytes received, even beyond what `content` keeps.
    pub content_bytes: u64,
    /// Prompt tokens reported by the server.
    pub prompt_tokens: Option<u64>,
    /// Completion tokens reported by the server.
    pub completion_tokens: Option<u64>,
    /// Prompt tokens the server says it read from its prompt cache.
    pub cached_tokens: Option<u64>,
    /// The server said why generation stopped.
    pub finished: bool,
    /// The stream's end marker arrived (`[DONE]` for OpenAI).
    pub saw_end: bool,
    /// Reasoning tokens reported by the server (OpenAI Responses).
    pub reasoning_tokens: Option<u64>,
    /// The response's id, kept when `keep_content` is set (the stateful
    /// Responses mode sends it back).
    pub response_id: Vec<u8>,
    /// The last `sequence_number` seen in the stream.
    pub last_sequence: Option<u64>,
    /// Events missing from the `sequence_number`s seen.
    pub sequence_gaps: u64,
    /// The frame of the last event that carried only text, kept across
    /// responses (`memo`): a later event in the same frame skips the scan.
    pub memo: memo::EventMemo,
}

impl Reply {
    /// Forgets the previous response.
    pub fn clear(&mut self) {
        self.content.clear();
        self.content_bytes = 0;
        self.prompt_tokens = None;
        self.completion_tokens = None;
        self.cached_tokens = None;
        self.finished = false;
        self.saw_end = false;
        self.reasoning_tokens = None;
        self.response_id.clear();
        self.last_sequence = None;
        self.sequence_gaps = 0;
    }

    /// Counts a JSON string of generated text as decoded; decodes it (one
    /// allocation, only for escaped text) just when `keep_content` is set.
    pub fn push_json_text(&mut self, text: &json::Str<'_>) {
        if !text.escaped {
            self.push_content(text.raw);
        } else if self.keep_content {
            self.push_content(&text.decoded());
        } else {
            self.content_bytes += text.decoded_len() as u64;
        }
    }

    /// Whether `content` holds less than the reply had (it passed
    /// `limits::BODY_BYTES_MAX`), so it cannot stand for the reply in a
    /// history.
    pub fn content_was_cut(&self) -> bool {
        self.keep_content && self.content_bytes > self.content.len() as u64
    }

    /// Counts generated text; keeps at most `BODY_BYTES_MAX` of it when
    /// `keep_content` is set.
    pub fn push_content(&mut self, text: &[u8]) {
        self.content_bytes += text.len() as u64;
        if !self.keep_content {
            return;
        }
        let room = crate::limits::BODY_BYTES_MAX.saturating_sub(self.content.len());
        self.content
            .extend_from_slice(&text[..text.len().min(room)]);
    }
}

/// What one SSE event meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// It carried generated content (counts for TTFT and ITL).
    Content,
    /// It carried reasoning (counted apart; the first one's time is the
    /// time to first reasoning).
    Reasoning,
    /// Metadata, usage, keep-alive or role-only deltas.
    Other,
    /// The stream's end marker; nothing more is expected.
    End,
}

/// A response that does not follow the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// A body or event is not the JSON the protocol defines.
    BadJson,
    /// The server sent an error object inside a 200 stream.
    ErrorEvent,
    /// An SSE line or event exceeded its bound.
    EventTooLarge,
}

impl From<sse::SseError> for ProtocolError {
    fn from(_: sse::SseError) -> Self {
        ProtocolError::EventTooLarge
    }
}

/// Where an API key goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer <key>` (OpenAI, most gateways).
    Bearer,
    /// `x-api-key: <key>` (Anthropic).
    XApiKey,
}

impl Auth {
    /// Parses a profile's `auth` value.
    pub fn parse(text: &str) -> Option<Auth> {
        match text.to_ascii_lowercase().as_str() {
            "bearer" | "authorization" => Some(Auth::Bearer),
            "x-api-key" | "x_api_key" | "api-key" => Some(Auth::XApiKey),
            _ => None,
        }
    }

    /// The profile spelling.
    pub fn name(self) -> &'static str {
        match self {
            Auth::Bearer => "bearer",
            Auth::XApiKey => "x-api-key",
        }
    }

    /// The header carrying `key` this way.
    pub fn header(self, key: &str) -> (String, String) {
        match self {
            Auth::Bearer => ("Authorization".into(), format!("Bearer {key}")),
            Auth::XApiKey => ("x-api-key".into(), key.to_string()),
        }
    }
}

/// One wire format.
pub trait Protocol: Sync + fmt::Debug {
    /// Name used in profiles (`openai-chat`).
    fn name(&self) -> &'static str;
    /// Default request path.
    fn default_path(&self) -> &'static str;
    /// Where this API expects its key, unless a profile says otherwise.
    fn default_auth(&self) -> Auth;
    /// Headers this protocol always sends (besides Host, Content-Type and
    /// Content-Length).
    fn fixed_headers(&self) -> &'static [(&'static str, &'static str)];
    /// Appends the JSON request body to `out`.
    fn write_body(&self, request: &TurnRequest<'_>, out: &mut Vec<u8>);
    /// Decodes a complete non-streamed response body.
    fn parse_body(&self, body: &[u8], reply: &mut Reply) -> Result<(), ProtocolError>;
    /// Decodes one SSE event of a streamed response.
    fn parse_event(
        &self,
        event: sse::Event<'_>,
        reply: &mut Reply,
    ) -> Result<EventKind, ProtocolError>;
}

/// Every protocol, by profile name.
pub static REGISTRY: &[&dyn Protocol] = &[
    &openai::OpenAiChat,
    &anthropic::AnthropicMessages,
    &responses::OpenAiResponses,
];

/// Looks a protocol up by name (also accepts common aliases).
pub fn by_name(name: &str) -> Option<&'static dyn Protocol> {
    let name = match name {
        "openai" | "openai_chat" | "chat" | "openai-chat-completions" => "openai-chat",
        "anthropic-messages" | "anthropic_messages" | "messages" | "claude" => "anthropic",
        "responses" | "openai_responses" | "openai-response" => "openai-responses",
        other => other,
    };
    REGISTRY.iter().copied().find(|p| p.name() == name)
}

/// Names of all protocols, for error messages.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|p| p.name()).collect()
}
