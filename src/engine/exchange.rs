//! One request and its response on one connection.
//!
//! Writes the prepared request bytes, reads the head, then streams the body
//! through the framing decoder into either the SSE parser (for an event
//! stream) or a bounded body buffer (for JSON), and finally asks the
//! protocol adapter what it all meant. Every timestamp is taken here, once
//! per read: TTFB at the first byte, TTFT at the first content-bearing
//! event, an ITL gap between consecutive content-bearing events. Events that
//! arrive in the same read share its timestamp, which is when the generator
//! could first have seen them.
//!
//! Nothing here allocates per request once the scratch buffers have grown
//! to the largest response seen, and nothing panics on what the server
//! sends.

use crate::http::response::{self, BodyDecoder, HeadParse, HttpError};
use crate::http::sse::SseParser;
use crate::limits;
use crate::protocol::{EventKind, Protocol, ProtocolError, Reply};
use crate::results::ErrorClass;
use crate::rt;
use crate::transport::{Stream, TlsFailure};
use std::io;
use std::time::{Duration, Instant};

/// An open connection with its read buffer.
#[derive(Debug)]
pub struct Conn {
    /// The socket, plain or TLS.
    pub stream: Stream,
    /// Read buffer, `limits::READ_BUFFER_BYTES`, allocated once per connection.
    buf: Box<[u8]>,
    /// Whether a response has already been read on it (a reused connection
    /// may have been closed by the server while idle).
    pub reused: bool,
    /// The address it goes to (an index into `Plan::addresses`).
    pub address: usize,
}

impl Conn {
    /// Wraps a freshly connected stream.
    pub fn new(stream: Stream, address: usize) -> Self {
        Conn {
            stream,
            address,
            buf: vec![0; limits::READ_BUFFER_BYTES].into_boxed_slice(),
            reused: false,
        }
    }
}

/// Per-user buffers reused for every request.
#[derive(Debug, Default)]
pub struct Scratch {
    /// A non-streamed response body.
    pub body: Vec<u8>,
    /// SSE state for a streamed body.
    pub sse: SseParser,
    /// What the adapter decoded.
    pub reply: Reply,
    /// Inter-token gaps of the current response, in microseconds.
    pub itl_gaps_us: Vec<u32>,
}

/// What one exchange observed, beyond the adapter's `Reply`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Observed {
    /// Status code (0 when no head arrived).
    pub status: u16,
    /// The connection may be reused.
    pub keep_alive: bool,
    /// `Retry-After` seconds, when sent.
    pub retry_after_s: Option<u32>,
    /// Time to the first response byte.
    pub ttfb: Option<Duration>,
    /// Time to the first content-bearing event (streamed only).
    pub ttft: Option<Duration>,
    /// When the response was complete.
    pub done_at: Option<Instant>,
    /// SSE events received.
    pub sse_events: u64,
    /// SSE events that carried content.
    pub content_events: u64,
    /// SSE events that carried reasoning (counted apart from content).
    pub reasoning_events: u64,
    /// Time to the first reasoning event, when there was one.
    pub ttfr: Option<Duration>,
    /// Gaps not kept because `itl_gaps_us` was full.
    pub itl_gaps_dropped: u64,
    /// The response was an event stream.
    pub streamed: bool,
}

/// Why an exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A reused connection failed before any response byte: the server
    /// closed it while idle. The caller may retry once on a new connection.
    Stale,
    /// Anything else.
    Class(ErrorClass),
}

impl From<ErrorClass> for Failure {
    fn from(class: ErrorClass) -> Self {
        Failure::Class(class)
    }
}

fn io_class(error: &io::Error) -> ErrorClass {
    if TlsFailure::of(error).is_some() {
        // An alert, a record that does not decrypt, bytes that are not
        // TLS: the session is broken, whatever the socket says.
        return ErrorClass::TlsProtocol;
    }
    match error.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionAborted => ErrorClass::ConnReset,
        io::ErrorKind::UnexpectedEof => ErrorClass::Eof,
        io::ErrorKind::TimedOut => ErrorClass::Timeout,
        _ => ErrorClass::IoOther,
    }
}

fn http_class(_: HttpError) -> ErrorClass {
    ErrorClass::BadResponse
}

fn protocol_class(error: ProtocolError) -> ErrorClass {
    match error {
        ProtocolError::BadJson => ErrorClass::BadJson,
        ProtocolError::ErrorEvent => ErrorClass::StreamErrorEvent,
        ProtocolError::EventTooLarge => ErrorClass::BadResponse,
    }
}

/// Sends `request` on `conn` and reads the whole response.
///
/// `t0` is when the request started (the caller's clock, so open-loop
/// callers can pass the intended instant). On success `observed` and
/// `scratch.reply` describe the response; a non-2xx status is a success of
/// the exchange (the caller classifies it).
///
/// One `async fn` on purpose, with the synchronous steps in helpers: every
/// nested `async fn` keeps its own copy of its arguments in the task, and
/// splitting the head and body reads into their own grew each open-loop
/// arrival's task from 840 to 1,008 bytes, past the 1,032 bytes (with the
/// task header) that glibc's per-thread cache serves.
pub async fn exchange(
    conn: &mut Conn,
    protocol: &dyn Protocol,
    request: &[u8],
    scratch: &mut Scratch,
    t0: Instant,
    observed: &mut Observed,
) -> Result<(), Failure> {
    *observed = Observed::default();
    scratch.reply.clear();
    scratch.body.clear();
    scratch.sse.reset();
    scratch.itl_gaps_us.clear();
    let reused = conn.reused;
    if let Err(e) = conn.stream.write_all(request).await {
        let class = io_class(&e);
        return Err(if reused && class == ErrorClass::ConnReset {
            Failure::Stale
        } else {
            class.into()
        });
    }
    // The answer cannot have arrived yet: wait for the socket's event
    // instead of paying for a `recv` that would find nothing.
    conn.stream.readable().await;
    let mut filled = 0;
    let mut interim = 0;
    let (head, mut now) = loop {
        let n = match conn.stream.read_head(&mut conn.buf[filled..]).await {
            Ok(0) => return Err(read_failure(None, reused, filled, observed)),
            Ok(n) => n,
            Err(e) => return Err(read_failure(Some(&e), reused, filled, observed)),
        };
        let now = Instant::now();
        observed.ttfb.get_or_insert(now - t0);
        filled += n;
        if let Some(head) = final_head(&mut conn.buf, &mut filled, &mut interim)? {
            break (head, now);
        }
    };
    conn.reused = true;
    let success = begin_body(observed, &head);
    if let Some(done) = body_in_place(conn, protocol, &head, filled, now, scratch, observed) {
        return done;
    }
    let mut body = BodyRead {
        protocol,
        decoder: BodyDecoder::new(head.framing),
        state: StreamState::default(),
        success,
        t0,
    };
    let mut unused = body.feed(&conn.buf[head.head_bytes..filled], scratch, observed, now)?;
    // A stream cut off mid-body ended before its end marker: that is a
    // truncated stream, whatever the socket said.
    let cut = observed.streamed.then_some(ErrorClass::TruncatedStream);
    loop {
        if body.decoder.is_done() {
            // We never pipeline, so bytes after the response mean the
            // framing was wrong; do not trust this connection again.
            observed.keep_alive &= unused == 0;
            break;
        }
        // On the ring the bytes are decoded where they arrived; the clock
        // is read once per read, when its first bytes are handed over.
        let mut clock = None;
        let mut failure = None;
        let n = conn
            .stream
            .read_with(&mut conn.buf[..], |data| {
                let now = *clock.get_or_insert_with(Instant::now);
                match body.feed(data, scratch, observed, now) {
                    Ok(left) => {
                        unused = left;
                        data.len() - left
                    }
                    Err(f) => {
                        failure = Some(f);
                        0
                    }
                }
            })
            .await
            // TLS that broke is named as such (`io_class`), not as a
            // short stream.
            .map_err(|e| {
                cut.filter(|_| TlsFailure::of(&e).is_none())
                    .unwrap_or_else(|| io_class(&e))
            })?;
        if let Some(failure) = failure {
            return Err(failure);
        }
        now = clock.unwrap_or_else(Instant::now);
        if n == 0 {
            body.decoder
                .finish_at_eof()
                .map_err(|_| cut.unwrap_or(ErrorClass::Eof))?;
            observed.keep_alive = false;
            break;
        }
        // Long streams must not hold the shard: other users' timestamps
        // depend on it getting back to the reactor.
        rt::yield_if_needed().await;
    }
    observed.done_at = Some(now);
    finish(protocol, scratch, observed, success)
}

/// The failure of a read before the response head (`None`: the peer closed
/// the connection): `Stale` when a reused connection was reset or closed
/// before any byte came back (the server closed it while idle), the
/// class otherwise.
fn read_failure(
    error: Option<&io::Error>,
    reused: bool,
    filled: usize,
    observed: &Observed,
) -> Failure {
    let nothing_back = reused && filled == 0 && observed.ttfb.is_none();
    let class = error.map_or(ErrorClass::Eof, io_class);
    let stale = match error {
        None => nothing_back,
        Some(_) => nothing_back && class == ErrorClass::ConnReset,
    };
    if stale {
        Failure::Stale
    } else {
        class.into()
    }
}

/// Parses what is buffered: a final head when one is complete. Interim
/// (1xx) heads are dropped from the buffer and the rest parsed again.
fn final_head(
    buf: &mut [u8],
    filled: &mut usize,
    interim: &mut usize,
) -> Result<Option<response::Head>, Failure> {
    loop {
        match response::parse_head(&buf[..*filled]).map_err(http_class)? {
            HeadParse::Incomplete => return Ok(None),
            HeadParse::Complete(head)
                if (100..200).contains(&head.status) && head.status != 101 =>
            {
                *interim += 1;
                if *interim > limits::INTERIM_RESPONSES_MAX {
                    return Err(ErrorClass::BadResponse.into());
                }
                buf.copy_within(head.head_bytes..*filled, 0);
                *filled -= head.head_bytes;
            }
            HeadParse::Complete(head) => return Ok(Some(head)),
        }
    }
}

/// Notes what the head says; returns whether the status is a success.
fn begin_body(observed: &mut Observed, head: &response::Head) -> bool {
    observed.status = head.status;
    observed.keep_alive = head.keep_alive;
    observed.retry_after_s = head.retry_after_s;
    let success = (200..300).contains(&head.status);
    observed.streamed = success && head.event_stream;
    success
}

/// The common case for a JSON reply: the whole body arrived with the head,
/// so it is decoded where it lies instead of being copied. `None` when it
/// did not (or the reply is not such a body).
fn body_in_place(
    conn: &Conn,
    protocol: &dyn Protocol,
    head: &response::Head,
    filled: usize,
    now: Instant,
    scratch: &mut Scratch,
    observed: &mut Observed,
) -> Option<Result<(), Failure>> {
    if observed.streamed || !(200..300).contains(&head.status) {
        return None;
    }
    let response::Framing::Length(length) = head.framing else {
        return None;
    };
    let end = head.head_bytes as u64 + length;
    if end > filled as u64 {
        return None;
    }
    let end = end as usize;
    observed.keep_alive &= end == filled;
    observed.done_at = Some(now);
    let parsed = protocol.parse_body(&conn.buf[head.head_bytes..end], &mut scratch.reply);
    Some(match parsed {
        Ok(()) => check_content(&scratch.reply),
        Err(e) => Err(protocol_class(e).into()),
    })
}

/// What a complete body meant: nothing more for a non-2xx, the end marker
/// for a stream, the adapter's decoding of a buffered body.
fn finish(
    protocol: &dyn Protocol,
    scratch: &mut Scratch,
    observed: &Observed,
    success: bool,
) -> Result<(), Failure> {
    if !success {
        return Ok(());
    }
    if observed.streamed {
        if !scratch.reply.saw_end || scratch.sse.has_partial() {
            return Err(ErrorClass::TruncatedStream.into());
        }
    } else {
        protocol
            .parse_body(&scratch.body, &mut scratch.reply)
            .map_err(protocol_class)?;
    }
    check_content(&scratch.reply)
}

/// Body bytes of a 2xx response: events for a stream, the body buffer
/// (bounded) otherwise.
fn take(
    protocol: &dyn Protocol,
    scratch: &mut Scratch,
    state: &mut StreamState,
    observed: &mut Observed,
    data: &[u8],
    t0: Instant,
    now: Instant,
) -> Result<(), Failure> {
    if observed.streamed {
        return consume_events(protocol, scratch, state, observed, data, t0, now);
    }
    if scratch.body.len() + data.len() > limits::BODY_BYTES_MAX {
        return Err(ErrorClass::BodyTooLarge.into());
    }
    scratch.body.extend_from_slice(data);
    Ok(())
}

/// A 2xx response must carry generated content.
fn check_content(reply: &crate::protocol::Reply) -> Result<(), Failure> {
    if reply.content_bytes == 0 {
        return Err(ErrorClass::EmptyCompletion.into());
    }
    Ok(())
}

/// A response body being read: its framing, and what its bytes go to.
struct BodyRead<'a> {
    protocol: &'a dyn Protocol,
    decoder: BodyDecoder,
    state: StreamState,
    /// A 2xx: the body is decoded; otherwise only its framing is followed.
    success: bool,
    t0: Instant,
}

impl BodyRead<'_> {
    /// Decodes body bytes that arrived at `now` until the body ends;
    /// returns how many were left over after its end.
    fn feed(
        &mut self,
        data: &[u8],
        scratch: &mut Scratch,
        observed: &mut Observed,
        now: Instant,
    ) -> Result<usize, Failure> {
        let mut pos = 0;
        while pos < data.len() && !self.decoder.is_done() {
            let step = self.decoder.step(&data[pos..]).map_err(http_class)?;
            pos += step.consumed;
            if !step.data.is_empty() && self.success {
                let (protocol, t0) = (self.protocol, self.t0);
                take(
                    protocol,
                    scratch,
                    &mut self.state,
                    observed,
                    step.data,
                    t0,
                    now,
                )?;
            }
        }
        Ok(data.len() - pos)
    }
}

/// Timing state across the events of one stream.
#[derive(Debug, Default)]
struct StreamState {
    /// When the previous content-bearing event arrived.
    last_content: Option<Instant>,
}

fn consume_events(
    protocol: &dyn Protocol,
    scratch: &mut Scratch,
    state: &mut StreamState,
    observed: &mut Observed,
    data: &[u8],
    t0: Instant,
    now: Instant,
) -> Result<(), Failure> {
    let Scratch {
        sse,
        reply,
        itl_gaps_us,
        ..
    } = scratch;
    sse.feed::<ProtocolError>(data, |event| {
        observed.sse_events += 1;
        let kind = protocol.parse_event(event, reply)?;
        if kind == EventKind::Reasoning {
            observed.reasoning_events += 1;
            observed.ttfr.get_or_insert(now - t0);
        }
        if kind == EventKind::Content {
            observed.content_events += 1;
            match state.last_content {
                None => observed.ttft = Some(now - t0),
                Some(last) => {
                    if itl_gaps_us.len() < limits::ITL_GAPS_PER_RESPONSE_MAX {
                        let gap = u32::try_from((now - last).as_micros()).unwrap_or(u32::MAX);
                        itl_gaps_us.push(gap);
                    } else {
                        observed.itl_gaps_dropped += 1;
                    }
                }
            }
            state.last_content = Some(now);
        }
        Ok(())
    })
    .map_err(|e| Failure::Class(protocol_class(e)))
}
