//! HTTP framing for the mock's replies: heads, chunked SSE bodies,
//! token pacing with faults, and error bodies in each API's shape.

use super::faults::Fault;
use super::log::Wire;
use super::timing::Timing;
use crate::http::{push_decimal, push_hex};
use crate::rt;
use std::io;

/// Which API a response imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flavor {
    OpenAi,
    Anthropic,
    Responses,
}

impl Flavor {
    /// An error body in this API's shape.
    pub(super) fn error_body(self, status: u16, message: &str) -> String {
        match self {
            Flavor::OpenAi | Flavor::Responses => {
                serde_json::json!({"error": {"message": message, "type": "mock_error", "code": status}})
                    .to_string()
            }
            Flavor::Anthropic => {
                let kind = match status {
                    429 => "rate_limit_error",
                    529 => "overloaded_error",
                    400..=499 => "invalid_request_error",
                    _ => "api_error",
                };
                serde_json::json!({"type": "error", "error": {"type": kind, "message": message}})
                    .to_string()
            }
        }
    }
}

/// Sends `tokens` content events, `token(events, i)` formatting event i,
/// with the time to first token, the gap between tokens and the fault
/// halfway (`error` formats the error event). Events are batched into one
/// write unless a delay separates them. Returns true when the stream was
/// cut (the connection must then be dropped).
pub(super) async fn stream_tokens(
    stream: &mut Wire,
    out: &mut Vec<u8>,
    events: &mut Vec<u8>,
    tokens: u64,
    mut timing: Timing,
    token: impl Fn(&mut Vec<u8>, u64),
    error: impl Fn(&mut Vec<u8>),
) -> io::Result<bool> {
    if !timing.ttft.is_zero() {
        flush_events(stream, out, events).await?;
        rt::sleep(timing.ttft).await;
    }
    let back_to_back = timing.back_to_back();
    for i in 0..tokens {
        if i > 0 && !back_to_back {
            flush_events(stream, out, events).await?;
            rt::sleep(timing.next_gap()).await;
        }
        if i == tokens / 2 {
            match timing.fault {
                Fault::CloseMidStream => {
                    push_chunk(out, events);
                    stream.write_all(out).await?;
                    return Ok(true);
                }
                Fault::ErrorEvent => error(events),
                _ => {}
            }
        }
        token(events, i);
    }
    Ok(false)
}

/// Starts a chunked event-stream response in `out`.
pub(super) fn stream_head(out: &mut Vec<u8>, keep_alive: bool) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n");
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes what is buffered (head and pending events) now.
pub(super) async fn flush_events(
    stream: &mut Wire,
    out: &mut Vec<u8>,
    events: &mut Vec<u8>,
) -> io::Result<()> {
    push_chunk(out, events);
    events.clear();
    stream.write_all(out).await?;
    out.clear();
    Ok(())
}

/// Frames `data` as one HTTP chunk (nothing for empty data, which would
/// otherwise end the body).
pub(super) fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    push_hex(out, data.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// A whole response with a JSON body, into `out`.
pub(super) fn simple_response(out: &mut Vec<u8>, status: u16, body: &[u8], keep_alive: bool) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.extend_from_slice(b" ");
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: application/json\r\nContent-Length: ");
    push_decimal(out, body.len() as u64);
    out.extend_from_slice(b"\r\n");
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    if status == 429 {
        out.extend_from_slice(b"Retry-After: 1\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// Writes a whole response with a JSON body.
pub(super) async fn write_simple(
    stream: &mut Wire,
    out: &mut Vec<u8>,
    status: u16,
    body: &[u8],
    keep_alive: bool,
) -> io::Result<()> {
    simple_response(out, status, body, keep_alive);
    stream.write_all(out).await
}

/// Writes a non-streamed 200 reply; with the `close_mid_stream` fault,
/// only its head and half its body. Returns true when the connection
/// must then be dropped.
pub(super) async fn write_reply(
    stream: &mut Wire,
    out: &mut Vec<u8>,
    body: &[u8],
    keep_alive: bool,
    fault: Fault,
) -> io::Result<bool> {
    simple_response(out, 200, body, keep_alive);
    if fault == Fault::CloseMidStream {
        let cut = out.len() - body.len() / 2;
        stream.write_all(&out[..cut]).await?;
        return Ok(true);
    }
    stream.write_all(out).await?;
    Ok(false)
}

/// Writes an error in the API's shape and closes the connection after it.
pub(super) async fn write_error(
    stream: &mut Wire,
    out: &mut Vec<u8>,
    flavor: Flavor,
    status: u16,
    message: &str,
) -> io::Result<()> {
    let body = flavor.error_body(status, message);
    write_simple(stream, out, status, body.as_bytes(), false).await
}

/// The reason phrase of a status.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_errors_have_anthropics_shape() {
        let body = Flavor::Anthropic.error_body(429, "slow down");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "rate_limit_error");
    }
}
