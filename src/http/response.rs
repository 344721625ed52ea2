//! Incremental HTTP/1.1 response parsing: the head with httparse, then the
//! body by Content-Length, chunked transfer coding, or read-until-close.
//!
//! Both halves are push parsers over `&[u8]` that never allocate and never
//! panic on input: `parse_head` answers complete / incomplete / invalid, and
//! `BodyDecoder::step` consumes some input and hands back a borrowed slice of
//! body data. Every length taken from the wire is bounded before use.

use crate::limits;
use std::mem::MaybeUninit;

/// Why a response could not be parsed. Small and `Copy`: it is counted, not
/// printed, on the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// The head did not end within `limits::HEAD_BYTES_MAX` bytes.
    HeadTooLarge,
    /// The status line or a header is malformed, or there are more than
    /// `limits::HEADERS_MAX` headers.
    BadHead,
    /// Content-Length is not a number, is too large, or appears twice with
    /// different values.
    BadContentLength,
    /// A chunk-size line or the CRLF after chunk data is malformed.
    BadChunk,
    /// The trailer section is longer than `limits::HEAD_BYTES_MAX`.
    TrailerTooLarge,
    /// The connection closed before the body was complete.
    Truncated,
}

/// How the body's end is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the server closes the connection.
    UntilClose,
    /// No body (1xx, 204, 304).
    Empty,
}

/// The parts of a response head the engine uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Status code.
    pub status: u16,
    /// How the body ends.
    pub framing: Framing,
    /// Whether the connection may carry another request afterwards.
    pub keep_alive: bool,
    /// `Content-Type: text/event-stream`.
    pub event_stream: bool,
    /// `Retry-After` in whole seconds, when present and numeric.
    pub retry_after_s: Option<u32>,
    /// Bytes of the head, including the blank line.
    pub head_bytes: usize,
}

/// Result of `parse_head`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadParse {
    /// A whole head was found at the start of the input.
    Complete(Head),
    /// More bytes are needed.
    Incomplete,
}

/// Parses a response head at the start of `input`.
pub fn parse_head(input: &[u8]) -> Result<HeadParse, HttpError> {
    // Left uninitialised: httparse writes the ones it fills, and filling
    // all 64 first cost a few hundred instructions per response.
    let mut headers = [const { MaybeUninit::<httparse::Header>::uninit() }; limits::HEADERS_MAX];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        input,
        &mut headers,
    );
    let head_bytes = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if input.len() >= limits::HEAD_BYTES_MAX {
                return Err(HttpError::HeadTooLarge);
            }
            return Ok(HeadParse::Incomplete);
        }
        Err(_) => return Err(HttpError::BadHead),
    };
    if head_bytes > limits::HEAD_BYTES_MAX {
        return Err(HttpError::HeadTooLarge);
    }
    let status = response.code.ok_or(HttpError::BadHead)?;
    let http10 = response.version == Some(0);
    let mut head = Head {
        status,
        framing: Framing::UntilClose,
        keep_alive: !http10,
        event_stream: false,
        retry_after_s: None,
        head_bytes,
    };
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    for header in response.headers.iter() {
        let name = header.name.as_bytes();
        let value = trim(header.value);
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_decimal(value).ok_or(HttpError::BadContentLength)?;
            if n > limits::CONTENT_LENGTH_MAX || content_length.is_some_and(|c| c != n) {
                return Err(HttpError::BadContentLength);
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
            // The last coding decides; `chunked` must be last if present.
            let last = value.rsplit(|&b| b == b',').next().map(trim).unwrap_or(b"");
            chunked = last.eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(trim) {
                if token.eq_ignore_ascii_case(b"close") {
                    head.keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && http10 {
                    head.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"content-type") {
            head.event_stream = starts_with_ignore_case(value, b"text/event-stream");
        } else if name.eq_ignore_ascii_case(b"retry-after") {
            head.retry_after_s = parse_decimal(value).and_then(|s| u32::try_from(s).ok());
        }
    }
    head.framing = framing(status, transfer_encoding.then_some(chunked), content_length);
    if head.framing == Framing::UntilClose {
        head.keep_alive = false;
    }
    Ok(HeadParse::Complete(head))
}

/// How a body with this status and these headers ends: `chunked` is
/// `Some(last coding is chunked)` when Transfer-Encoding was sent.
fn framing(status: u16, chunked: Option<bool>, content_length: Option<u64>) -> Framing {
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return Framing::Empty;
    }
    match (chunked, content_length) {
        // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length. A
        // non-chunked coding can only be delimited by close.
        (Some(true), _) => Framing::Chunked,
        (Some(false), _) => Framing::UntilClose,
        (None, Some(n)) => Framing::Length(n),
        (None, None) => Framing::UntilClose,
    }
}

fn trim(mut bytes: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = bytes {
        if first.is_ascii_whitespace() {
            bytes = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = bytes {
        if last.is_ascii_whitespace() {
            bytes = rest;
        } else {
            break;
        }
    }
    bytes
}

fn starts_with_ignore_case(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes.len() >= prefix.len() && bytes[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// Parses a decimal of at most 18 digits (so it cannot overflow `u64`).
pub fn parse_decimal(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 18 {
        return None;
    }
    let mut value: u64 = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u64::from(b - b'0');
    }
    Some(value)
}

/// Most hex digits in a chunk size: 15 digits < 2^60, so no overflow.
const CHUNK_SIZE_DIGITS_MAX: u8 = 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length {
        remaining: u64,
    },
    UntilClose,
    ChunkSize {
        size: u64,
        digits: u8,
    },
    ChunkExtension {
        size: u64,
    },
    ChunkData {
        remaining: u64,
    },
    ChunkDataCr,
    ChunkDataLf,
    Trailer {
        line_bytes: usize,
        total_bytes: usize,
    },
    Done,
}

/// One step of body decoding.
#[derive(Debug, PartialEq, Eq)]
pub struct Step<'a> {
    /// Input bytes used by this step.
    pub consumed: usize,
    /// Body data found in this step (a sub-slice of the input; may be empty).
    pub data: &'a [u8],
    /// The body is complete.
    pub done: bool,
}

/// Decodes a body incrementally. Keeps no buffer: a chunk-size line split
/// across reads is carried as state, so no input ever needs to be retained.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    state: State,
}

impl BodyDecoder {
    /// A decoder for a body with the given framing.
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Length(0) | Framing::Empty => State::Done,
            Framing::Length(remaining) => State::Length { remaining },
            Framing::Chunked => State::ChunkSize { size: 0, digits: 0 },
            Framing::UntilClose => State::UntilClose,
        };
        BodyDecoder { state }
    }

    /// Whether the body is complete.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Called when the peer closed the connection: fine only for a body
    /// delimited by close (which is then complete) or one already done.
    pub fn finish_at_eof(&mut self) -> Result<(), HttpError> {
        match self.state {
            State::Done => Ok(()),
            State::UntilClose => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(HttpError::Truncated),
        }
    }

    /// Consumes a prefix of `input`. Makes progress whenever `input` is not
    /// empty and the body is not done; the caller loops until all input is
    /// consumed or `done` is set.
    pub fn step<'a>(&mut self, input: &'a [u8]) -> Result<Step<'a>, HttpError> {
        let mut pos = 0;
        while pos < input.len() {
            match self.state {
                State::Done => break,
                State::Length { remaining } => {
                    let n = take(remaining, input.len() - pos);
                    let left = remaining - n as u64;
                    self.state = if left == 0 {
                        State::Done
                    } else {
                        State::Length { remaining: left }
                    };
                    return Ok(self.data_step(input, pos, n));
                }
                State::UntilClose => {
                    return Ok(self.data_step(input, pos, input.len() - pos));
                }
                State::ChunkData { remaining } => {
                    let n = take(remaining, input.len() - pos);
                    let left = remaining - n as u64;
                    self.state = if left == 0 {
                        State::ChunkDataCr
                    } else {
                        State::ChunkData { remaining: left }
                    };
                    return Ok(self.data_step(input, pos, n));
                }
                _ => {
                    self.framing_byte(input[pos])?;
                    pos += 1;
                }
            }
        }
        Ok(Step {
            consumed: pos,
            data: &[],
            done: self.state == State::Done,
        })
    }

    fn data_step<'a>(&self, input: &'a [u8], pos: usize, n: usize) -> Step<'a> {
        Step {
            consumed: pos + n,
            data: &input[pos..pos + n],
            done: self.state == State::Done,
        }
    }

    /// Advances the chunk framing state machine by one byte.
    fn framing_byte(&mut self, byte: u8) -> Result<(), HttpError> {
        self.state = match self.state {
            State::ChunkSize { size, digits } => match byte {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    if digits >= CHUNK_SIZE_DIGITS_MAX {
                        return Err(HttpError::BadChunk);
                    }
                    let value = (byte as char).to_digit(16).unwrap_or(0);
                    State::ChunkSize {
                        size: size * 16 + u64::from(value),
                        digits: digits + 1,
                    }
                }
                _ if digits == 0 => return Err(HttpError::BadChunk),
                b';' | b' ' | b'\t' | b'\r' => State::ChunkExtension { size },
                b'\n' => chunk_start(size),
                _ => return Err(HttpError::BadChunk),
            },
            // Extensions (`;name=value`) are skipped up to the line end.
            State::ChunkExtension { size } => match byte {
                b'\n' => chunk_start(size),
                _ => State::ChunkExtension { size },
            },
            State::ChunkDataCr => match byte {
                b'\r' => State::ChunkDataLf,
                b'\n' => State::ChunkSize { size: 0, digits: 0 },
                _ => return Err(HttpError::BadChunk),
            },
            State::ChunkDataLf => match byte {
                b'\n' => State::ChunkSize { size: 0, digits: 0 },
                _ => return Err(HttpError::BadChunk),
            },
            State::Trailer {
                line_bytes,
                total_bytes,
            } => {
                if total_bytes >= limits::HEAD_BYTES_MAX {
                    return Err(HttpError::TrailerTooLarge);
                }
                match byte {
                    b'\n' if line_bytes == 0 => State::Done,
                    b'\n' => State::Trailer {
                        line_bytes: 0,
                        total_bytes: total_bytes + 1,
                    },
                    b'\r' => State::Trailer {
                        line_bytes,
                        total_bytes: total_bytes + 1,
                    },
                    _ => State::Trailer {
                        line_bytes: line_bytes + 1,
                        total_bytes: total_bytes + 1,
                    },
                }
            }
            other => other,
        };
        Ok(())
    }
}

fn chunk_start(size: u64) -> State {
    if size == 0 {
        State::Trailer {
            line_bytes: 0,
            total_bytes: 0,
        }
    } else {
        State::ChunkData { remaining: size }
    }
}

fn take(remaining: u64, available: usize) -> usize {
    usize::try_from(remaining).map_or(available, |r| r.min(available))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces split at `cuts` and returns (body, done).
    fn decode_split(
        framing: Framing,
        input: &[u8],
        cuts: &[usize],
    ) -> Result<(Vec<u8>, bool, usize), HttpError> {
        let mut decoder = BodyDecoder::new(framing);
        let mut body = Vec::new();
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(input.len());
        let mut consumed_total = 0;
        for window in bounds.windows(2) {
            let piece = &input[window[0]..window[1]];
            let mut pos = 0;
            while pos < piece.len() && !decoder.is_done() {
                let step = decoder.step(&piece[pos..])?;
                assert!(step.consumed > 0 || step.done, "no progress");
                body.extend_from_slice(step.data);
                pos += step.consumed;
            }
            consumed_total += pos;
            if decoder.is_done() {
                break;
            }
        }
        Ok((body, decoder.is_done(), consumed_total))
    }

    fn head(text: &str) -> Head {
        match parse_head(text.as_bytes()).unwrap() {
            HeadParse::Complete(h) => h,
            HeadParse::Incomplete => panic!("incomplete"),
        }
    }

    #[test]
    fn content_length_head() {
        let h =
            head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nContent-Type: application/json\r\n\r\n");
        assert_eq!(h.status, 200);
        assert_eq!(h.framing, Framing::Length(12));
        assert!(h.keep_alive);
        assert!(!h.event_stream);
        assert_eq!(h.head_bytes, 71);
    }

    #[test]
    fn chunked_event_stream_head_and_flags() {
        let h = head("HTTP/1.1 429 Too Many\r\ntransfer-encoding: gzip, chunked\r\nContent-Length: 5\r\ncontent-type: Text/Event-Stream; charset=utf-8\r\nRetry-After: 7\r\nConnection: close\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked);
        assert!(h.event_stream);
        assert_eq!(h.retry_after_s, Some(7));
        assert!(!h.keep_alive);
    }

    #[test]
    fn until_close_and_http10() {
        let h = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(h.framing, Framing::UntilClose);
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n");
        assert!(h.keep_alive);
        let h = head("HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(h.framing, Framing::Empty);
        assert!(h.keep_alive);
    }

    #[test]
    fn incomplete_then_complete_at_every_boundary() {
        let text = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
        for cut in 0..text.len() {
            let result = parse_head(&text[..cut]).unwrap();
            if cut < text.len() - 3 {
                assert_eq!(result, HeadParse::Incomplete, "cut {cut}");
            } else {
                assert!(matches!(result, HeadParse::Complete(_)), "cut {cut}");
            }
        }
    }

    #[test]
    fn oversized_and_malformed_heads_are_rejected() {
        // One long header, still incomplete at the bound.
        let mut big = b"HTTP/1.1 200 OK\r\nX-Filler: ".to_vec();
        big.resize(limits::HEAD_BYTES_MAX + 10, b'a');
        assert_eq!(parse_head(&big), Err(HttpError::HeadTooLarge));
        // A complete head that is itself over the bound.
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse_head(&big), Err(HttpError::HeadTooLarge));
        assert_eq!(
            parse_head(b"HTTX/1.1 200 OK\r\n\r\n"),
            Err(HttpError::BadHead)
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12a\r\n\r\n"),
            Err(HttpError::BadContentLength)
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(HttpError::BadContentLength)
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n"),
            Err(HttpError::BadContentLength)
        );
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..limits::HEADERS_MAX + 1 {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_head(&many), Err(HttpError::BadHead));
    }

    #[test]
    fn content_length_body_split_everywhere() {
        let body = b"hello, world";
        for cut in 0..=body.len() {
            let (out, done, _) = decode_split(Framing::Length(12), body, &[cut]).unwrap();
            assert_eq!(out, body);
            assert!(done);
        }
        // Bytes after the body are not consumed.
        let (out, done, consumed) = decode_split(Framing::Length(5), b"helloEXTRA", &[]).unwrap();
        assert_eq!(out, b"hello");
        assert!(done);
        assert_eq!(consumed, 5);
    }

    #[test]
    fn chunked_with_extensions_and_trailers_split_at_every_byte() {
        let wire = b"5;ext=1\r\nhello\r\n7 ; name=\"v\"\r\n, world\r\n0\r\nX-Trailer: yes\r\nX-Other: 1\r\n\r\n";
        for cut in 0..=wire.len() {
            let (out, done, consumed) = decode_split(Framing::Chunked, wire, &[cut]).unwrap();
            assert_eq!(out, b"hello, world", "cut {cut}");
            assert!(done, "cut {cut}");
            assert_eq!(consumed, wire.len());
        }
        // Every byte its own read.
        let cuts: Vec<usize> = (1..wire.len()).collect();
        let (out, done, _) = decode_split(Framing::Chunked, wire, &cuts).unwrap();
        assert_eq!(out, b"hello, world");
        assert!(done);
    }

    #[test]
    fn chunked_upper_hex_bare_lf_and_no_trailers() {
        let wire = b"A\nabcdefghij\n0\n\n";
        let (out, done, _) = decode_split(Framing::Chunked, wire, &[]).unwrap();
        assert_eq!(out, b"abcdefghij");
        assert!(done);
    }

    #[test]
    fn malformed_chunks() {
        assert_eq!(
            decode_split(Framing::Chunked, b"zz\r\n", &[]).unwrap_err(),
            HttpError::BadChunk
        );
        assert_eq!(
            decode_split(Framing::Chunked, b"3\r\nabcX\r\n", &[]).unwrap_err(),
            HttpError::BadChunk
        );
        assert_eq!(
            decode_split(Framing::Chunked, b"ffffffffffffffffff\r\n", &[]).unwrap_err(),
            HttpError::BadChunk
        );
        assert_eq!(
            decode_split(Framing::Chunked, b"\r\n", &[]).unwrap_err(),
            HttpError::BadChunk
        );
        let mut trailer = b"0\r\n".to_vec();
        trailer.extend(std::iter::repeat_n(b'a', limits::HEAD_BYTES_MAX + 1));
        assert_eq!(
            decode_split(Framing::Chunked, &trailer, &[]).unwrap_err(),
            HttpError::TrailerTooLarge
        );
    }

    #[test]
    fn eof_handling() {
        let mut d = BodyDecoder::new(Framing::UntilClose);
        let step = d.step(b"abc").unwrap();
        assert_eq!(step.data, b"abc");
        assert!(!step.done);
        assert_eq!(d.finish_at_eof(), Ok(()));
        assert!(d.is_done());
        let mut d = BodyDecoder::new(Framing::Length(10));
        d.step(b"abc").unwrap();
        assert_eq!(d.finish_at_eof(), Err(HttpError::Truncated));
        let mut d = BodyDecoder::new(Framing::Chunked);
        assert_eq!(d.finish_at_eof(), Err(HttpError::Truncated));
    }
}
