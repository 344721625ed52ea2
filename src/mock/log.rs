//! The mock's own view of each request (`loadtest mock --log-requests`):
//! one JSONL row per answered request, with the request id and
//! conversation UUID the generator sent and the times the mock saw, so
//! `loadtest join` can be tested with real server rows and a mock placed
//! behind a gateway shows the upstream's side.
//!
//! `Wire` is the connection as the mock's responders write to it: the
//! stream, plus what a row needs (when the first byte went out, the
//! status, the tokens). Each row is one `write` to a file opened for
//! appending, so the shards' rows never interleave mid-line; it costs the
//! mock a system call per request, which is why it is opt-in.

use crate::transport::Stream;
use std::fs::File;
use std::io::{self, Write as _};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Where the rows go.
#[derive(Debug, Clone)]
pub struct RequestLog {
    file: Arc<File>,
    clock: crate::host::UnixClock,
}

impl RequestLog {
    /// Opens (creating, appending to) `path`.
    pub fn open(path: &Path) -> io::Result<RequestLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(RequestLog {
            file: Arc::new(file),
            clock: crate::host::UnixClock::now(),
        })
    }

    /// Writes one row for the request `wire` just answered, read whole at
    /// `received`, with `request_id` and the body it came with.
    pub(super) fn row(
        &self,
        wire: &Wire,
        received: Instant,
        request_id: Option<&str>,
        body: &[u8],
    ) {
        let done = Instant::now();
        let conv = request_id
            .and_then(crate::content::RequestId::conversation)
            .or_else(|| bracketed_uuid(body));
        let ms = |at: Instant| at.saturating_duration_since(received).as_secs_f64() * 1000.0;
        let row = serde_json::json!({
            "request_id": request_id,
            "conv_uuid": conv,
            "received_us": self.clock.unix_us(received),
            "first_byte_us": wire.first_write.map(|at| self.clock.unix_us(at)),
            "last_byte_us": self.clock.unix_us(done),
            "ttfb_ms": wire.first_write.map(ms),
            "latency_ms": ms(done),
            "status": wire.status,
            "completion_tokens": wire.tokens,
        });
        let mut line = row.to_string().into_bytes();
        line.push(b'\n');
        // A row that cannot be written is lost, not the request.
        let _ = (&*self.file).write_all(&line);
    }
}

/// The connection as the responders write to it.
#[derive(Debug)]
pub struct Wire {
    stream: Stream,
    /// What the current request's row needs (only kept when logging).
    logging: bool,
    first_write: Option<Instant>,
    status: Option<u16>,
    pub(super) tokens: Option<u64>,
}

impl Wire {
    pub(super) fn new(stream: Stream, logging: bool) -> Wire {
        Wire {
            stream,
            logging,
            first_write: None,
            status: None,
            tokens: None,
        }
    }

    /// Forgets the previous request's observations.
    pub(super) fn begin(&mut self) {
        self.first_write = None;
        self.status = None;
        self.tokens = None;
    }

    /// Writes all of `buf`; the first write of a response notes when and
    /// with which status it went out.
    pub(super) async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.logging && self.first_write.is_none() {
            self.first_write = Some(Instant::now());
            self.status = buf
                .strip_prefix(b"HTTP/1.1 ")
                .and_then(|rest| std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok());
        }
        self.stream.write_all(buf).await
    }

    pub(super) async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf).await
    }

    pub(super) async fn readable(&mut self) {
        self.stream.readable().await
    }

    pub(super) fn reset(self) {
        self.stream.reset()
    }
}

/// The first `[<uuid>]` in a body (the conversation UUID the generator
/// puts at the start of a conversation's first message).
fn bracketed_uuid(body: &[u8]) -> Option<&str> {
    memchr::memchr_iter(b'[', body).find_map(|at| {
        // A hyphenated UUID is 36 bytes.
        let inner = std::str::from_utf8(body.get(at + 1..at + 37)?).ok()?;
        (body.get(at + 37) == Some(&b']') && uuid::Uuid::try_parse(inner).is_ok()).then_some(inner)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_conversation_is_found_in_the_prompt() {
        let body = br#"{"messages":[{"role":"user","content":"[0b5e2c1a-0000-4000-8000-000000000001] hi"}]}"#;
        assert_eq!(
            bracketed_uuid(body),
            Some("0b5e2c1a-0000-4000-8000-000000000001")
        );
        assert_eq!(bracketed_uuid(b"[not-a-uuid] [x]"), None);
        assert_eq!(
            bracketed_uuid(b"[0b5e2c1a-0000-4000-8000-00000000000g]"),
            None
        );
    }
}
