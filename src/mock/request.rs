//! What the mock reads from a request: the head (route, framing, the
//! `x-mock-*` knobs) and, with the JSON skimmer, the chat body.

use super::faults::Fault;
use crate::limits;
use crate::protocol::json::{self, Kind, Scanner};

/// Per-request knobs read from `x-mock-*` headers.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Knobs {
    pub(super) latency_ms: Option<u64>,
    pub(super) ttft_ms: Option<u64>,
    pub(super) itl_ms: Option<u64>,
    pub(super) tokens: Option<u64>,
    pub(super) status: Option<u16>,
    pub(super) close: bool,
    /// A fault asked for by name (`x-mock-fault`); `None`: drawn.
    pub(super) fault: Option<Fault>,
}

pub(super) struct RequestHead {
    pub(super) head_bytes: usize,
    pub(super) body_bytes: usize,
    pub(super) post: bool,
    pub(super) route: Route,
    pub(super) keep_alive: bool,
    /// It carried `anthropic-version` (an Anthropic client).
    pub(super) anthropic: bool,
    /// Where in the head the `x-request-id` value is, if it came.
    pub(super) request_id: Option<std::ops::Range<usize>>,
    pub(super) knobs: Knobs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    Chat,
    Messages,
    Responses,
    CountTokens,
    Models,
    Health,
    NotFound,
}

pub(super) fn parse_request_head(buf: &[u8]) -> Result<Option<RequestHead>, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut request = httparse::Request::new(&mut headers);
    let head_bytes = match request.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err("malformed request head"),
    };
    let path = request.path.unwrap_or("/");
    let path = path.split('?').next().unwrap_or(path);
    let route = match path {
        "/v1/chat/completions" | "/chat/completions" => Route::Chat,
        "/v1/messages" | "/messages" => Route::Messages,
        "/v1/responses" | "/responses" => Route::Responses,
        "/v1/messages/count_tokens" | "/messages/count_tokens" => Route::CountTokens,
        "/v1/models" | "/models" => Route::Models,
        "/health" | "/healthz" => Route::Health,
        _ => Route::NotFound,
    };
    let mut head = RequestHead {
        head_bytes,
        body_bytes: 0,
        post: request.method == Some("POST"),
        route,
        keep_alive: request.version != Some(0),
        anthropic: false,
        request_id: None,
        knobs: Knobs::default(),
    };
    for h in request.headers.iter() {
        let name = h.name;
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        let number = || value.parse::<u64>().ok();
        if name.eq_ignore_ascii_case("content-length") {
            head.body_bytes = value.parse().map_err(|_| "bad content-length")?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("chunked request bodies are not supported by the mock");
        } else if name.eq_ignore_ascii_case("connection") {
            head.keep_alive = !value.eq_ignore_ascii_case("close");
        } else if name.eq_ignore_ascii_case("anthropic-version") {
            head.anthropic = true;
        } else if name.eq_ignore_ascii_case("x-request-id") {
            // The value is a slice of `buf`: keep where it is.
            let at = h.value.as_ptr() as usize - buf.as_ptr() as usize;
            head.request_id = Some(at..at + h.value.len());
        } else if name.eq_ignore_ascii_case("x-mock-latency-ms") {
            head.knobs.latency_ms = number();
        } else if name.eq_ignore_ascii_case("x-mock-ttft-ms") {
            head.knobs.ttft_ms = number();
        } else if name.eq_ignore_ascii_case("x-mock-itl-ms") {
            head.knobs.itl_ms = number();
        } else if name.eq_ignore_ascii_case("x-mock-tokens") {
            head.knobs.tokens = number();
        } else if name.eq_ignore_ascii_case("x-mock-status") {
            head.knobs.status = number()
                .and_then(|s| u16::try_from(s).ok())
                .filter(|s| (200..600).contains(s));
        } else if name.eq_ignore_ascii_case("x-mock-close") {
            head.knobs.close = value == "1" || value.eq_ignore_ascii_case("true");
        } else if name.eq_ignore_ascii_case("x-mock-fault") {
            head.knobs.fault = Some(Fault::named(value).ok_or("unknown x-mock-fault")?);
        }
    }
    if head.body_bytes > limits::MOCK_REQUEST_BODY_BYTES_MAX {
        return Err("request body too large");
    }
    Ok(Some(head))
}

/// What the mock reads from a chat request.
pub(super) struct ChatRequest<'a> {
    /// The model, as raw JSON string content (echoed back unchanged, so
    /// its escapes stay valid).
    pub(super) model: Option<&'a [u8]>,
    /// Characters of message content (escape sequences count as written).
    pub(super) prompt_chars: u64,
    pub(super) max_tokens: Option<u64>,
    pub(super) max_completion_tokens: Option<u64>,
    pub(super) stream: bool,
    pub(super) include_usage: bool,
    /// Responses: the `previous_response_id`, raw.
    pub(super) previous_response_id: Option<&'a [u8]>,
}

/// Reads a chat request with the JSON skimmer; nothing is allocated.
pub(super) fn parse_chat(body: &[u8]) -> Result<ChatRequest<'_>, json::Bad> {
    let mut request = ChatRequest {
        model: None,
        prompt_chars: 0,
        max_tokens: None,
        max_completion_tokens: None,
        stream: false,
        include_usage: false,
        previous_response_id: None,
    };
    let mut s = Scanner::new(body);
    s.object(|s, key| {
        match key.raw {
            b"model" => request.model = s.string_or_null()?.map(|m| m.raw),
            b"messages" | b"system" | b"input" | b"instructions" => {
                request.prompt_chars += content_chars(s)?
            }
            b"max_tokens" | b"max_output_tokens" => request.max_tokens = s.u64_or_null()?,
            b"previous_response_id" => {
                request.previous_response_id = s.string_or_null()?.map(|id| id.raw)
            }
            b"max_completion_tokens" => request.max_completion_tokens = s.u64_or_null()?,
            b"stream" if s.peek()? == Kind::Bool => request.stream = s.bool()?,
            b"stream_options" if s.peek()? == Kind::Object => s.object(|s, key| {
                if key.raw == b"include_usage" && s.peek()? == Kind::Bool {
                    request.include_usage = s.bool()?;
                    Ok(())
                } else {
                    s.skip()
                }
            })?,
            _ => s.skip()?,
        }
        Ok(())
    })?;
    s.finish()?;
    Ok(request)
}

/// Sums the characters of every string under a `content` or `text` key,
/// and of every string in a list, below the current value.
fn content_chars(s: &mut Scanner<'_>) -> Result<u64, json::Bad> {
    let mut total = 0;
    match s.peek()? {
        Kind::String => total += chars(s.string()?.raw),
        Kind::Array => s.array(|s, _| {
            total += content_chars(s)?;
            Ok(())
        })?,
        Kind::Object => s.object(|s, key| {
            if key.raw == b"content" || key.raw == b"text" {
                total += content_chars(s)?;
                Ok(())
            } else {
                s.skip()
            }
        })?,
        _ => s.skip()?,
    }
    Ok(total)
}

/// UTF-8 characters in `bytes` (bytes that do not continue a sequence).
fn chars(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b & 0xC0 != 0x80).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_chars_from_strings_and_parts() {
        let r = parse_chat(
            br#"{"model":"m","messages":[{"role":"system","content":"abcd"},{"role":"user","content":[{"type":"text","text":"\u00e9fg"},{"type":"image_url","image_url":{"url":"x"}}]}],"max_tokens":5,"stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .unwrap();
        assert_eq!(r.prompt_chars, 4 + 8);
        assert_eq!(r.max_tokens, Some(5));
        assert_eq!(r.model, Some(&b"m"[..]));
        assert!(r.stream);
        assert!(r.include_usage);
        assert!(parse_chat(b"{\"messages\": [").is_err());
        assert!(parse_chat(b"[]").is_err());
        let r = parse_chat(b"{\"messages\":[{\"content\":\"\xc3\xa9t\xc3\xa9\"}]}").unwrap();
        assert_eq!(r.prompt_chars, 3);
    }

    #[test]
    fn messages_route_and_system_prompt() {
        let head = parse_request_head(b"POST /v1/messages HTTP/1.1\r\nContent-Length: 2\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.route, Route::Messages);
        let r = parse_chat(
            br#"{"model":"c","system":"abcdefgh","max_tokens":7,"messages":[{"role":"user","content":"ijkl"}]}"#,
        )
        .unwrap();
        assert_eq!(r.prompt_chars, 12);
        assert_eq!(r.max_tokens, Some(7));
    }

    #[test]
    fn responses_requests() {
        let head = parse_request_head(b"POST /v1/responses HTTP/1.1\r\nContent-Length: 2\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.route, Route::Responses);
        let r = parse_chat(
            br#"{"model":"m","instructions":"abcd","input":[{"type":"message","role":"user","content":"efgh"},{"role":"user","content":[{"type":"input_text","text":"ij"}]}],"max_output_tokens":9,"stream":true,"previous_response_id":"resp_mock_0_3"}"#,
        )
        .unwrap();
        assert_eq!(r.prompt_chars, 10);
        assert_eq!(r.max_tokens, Some(9));
        assert!(r.stream);
        assert_eq!(r.previous_response_id, Some(&b"resp_mock_0_3"[..]));
        let r = parse_chat(br#"{"input":"plain text"}"#).unwrap();
        assert_eq!(r.prompt_chars, 10);
    }

    #[test]
    fn request_head_knobs() {
        let head = parse_request_head(
            b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 12\r\nx-mock-ttft-ms: 50\r\nX-Mock-Tokens: 7\r\nx-mock-fault: truncate\r\nConnection: close\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.body_bytes, 12);
        assert_eq!(head.route, Route::Chat);
        assert!(head.post);
        assert!(!head.keep_alive);
        assert_eq!(head.knobs.ttft_ms, Some(50));
        assert_eq!(head.knobs.tokens, Some(7));
        assert_eq!(head.knobs.fault, Some(Fault::CloseMidStream));
        assert!(parse_request_head(b"GET /health HTTP/1.1\r\n")
            .unwrap()
            .is_none());
        assert!(parse_request_head(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n").is_err());
    }
}
