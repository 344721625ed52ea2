//! The mock's shards: accepting connections, reading one connection's
//! requests in turn, and routing each to its reply.

use super::faults::Fault;
use super::generate::TextCache;
use super::log::Wire;
use super::request::{parse_chat, parse_request_head, ChatRequest, RequestHead, Route};
use super::timing::Timing;
use super::wire::{self, write_error, write_simple, Flavor};
use super::{anthropic, openai, responses, MockConfig, MockStats};
use crate::limits;
use crate::rng::Rng;
use crate::rt;
use crate::transport::{Stream, TlsStream};
use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) async fn serve(
    fd: OwnedFd,
    shard: usize,
    config: MockConfig,
    stop: Arc<AtomicBool>,
    started: Instant,
) -> MockStats {
    let listener = rt::TcpListener::from_owned(fd);
    let shared = Rc::new(Shared {
        started,
        shard,
        rng: RefCell::new(Rng::new(
            config.seed ^ (shard as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        )),
        response_ids: RefCell::new(ResponseIds::default()),
        config,
        text: RefCell::new(TextCache::default()),
        open_connections: Cell::new(0),
        stats: Cell::new(MockStats::default()),
    });
    loop {
        match listener.accept().await {
            Ok(stream) => {
                if shared.open_connections.get() >= limits::MOCK_CONNECTIONS_PER_SHARD_MAX {
                    continue; // dropped: closes the socket
                }
                shared.count(|s| s.connections += 1);
                shared
                    .open_connections
                    .set(shared.open_connections.get() + 1);
                let shared = shared.clone();
                rt::spawn(async move {
                    if let Some(stream) = secure(stream, &shared).await {
                        let _ = serve_connection(stream, &shared).await;
                    }
                    shared
                        .open_connections
                        .set(shared.open_connections.get() - 1);
                })
                .detach();
            }
            Err(_) if stop.load(Ordering::Relaxed) => return shared.stats.get(),
            Err(_) => rt::sleep(Duration::from_millis(1)).await,
        }
    }
}

pub(super) struct Shared {
    /// When the server started (for `MockConfig::stall`).
    pub(super) started: Instant,
    /// This shard's number (it is part of the Responses ids it makes).
    pub(super) shard: usize,
    /// Draws faults and delays, seeded from `MockConfig::seed`.
    pub(super) rng: RefCell<Rng>,
    /// The Responses ids this shard made recently.
    pub(super) response_ids: RefCell<ResponseIds>,
    pub(super) config: MockConfig,
    pub(super) text: RefCell<TextCache>,
    /// Connections being served now (bounded by
    /// `limits::MOCK_CONNECTIONS_PER_SHARD_MAX`).
    pub(super) open_connections: Cell<usize>,
    pub(super) stats: Cell<MockStats>,
}

impl Shared {
    pub(super) fn count(&self, update: impl FnOnce(&mut MockStats)) {
        let mut stats = self.stats.get();
        update(&mut stats);
        self.stats.set(stats);
    }
}

/// The accepted socket as the mock serves it: through a TLS handshake
/// when it serves TLS (`None`: the handshake failed, counted).
async fn secure(tcp: rt::TcpStream, shared: &Shared) -> Option<Stream> {
    let Some(config) = &shared.config.tls else {
        return Some(Stream::Plain(tcp));
    };
    match TlsStream::accept(tcp, config.clone(), limits::MOCK_TLS_HANDSHAKE_TIMEOUT).await {
        Ok(tls) => {
            shared.count(|s| {
                s.tls_handshakes += 1;
                s.tls_resumed += u64::from(tls.resumed());
            });
            Some(Stream::Tls(Box::new(tls)))
        }
        Err(_) => {
            shared.count(|s| s.tls_failed += 1);
            None
        }
    }
}

/// Serves requests on one connection until it closes.
async fn serve_connection(stream: Stream, shared: &Shared) -> io::Result<()> {
    let mut stream = Wire::new(stream, shared.config.log.is_some());
    let mut buf = vec![0u8; limits::READ_BUFFER_BYTES];
    let mut filled = 0;
    let mut bufs = Buffers::default();
    loop {
        let out = &mut bufs.out;
        let head = loop {
            match parse_request_head(&buf[..filled]) {
                Ok(Some(head)) => break head,
                Ok(None) if filled < limits::HEAD_BYTES_MAX => {}
                Ok(None) => {
                    let message = "request head too large";
                    return write_error(&mut stream, out, Flavor::OpenAi, 431, message).await;
                }
                Err(message) => {
                    return write_error(&mut stream, out, Flavor::OpenAi, 400, message).await
                }
            }
            let n = stream.read(&mut buf[filled..]).await?;
            if n == 0 {
                return Ok(());
            }
            filled += n;
        };
        let total = head.head_bytes + head.body_bytes;
        if total > buf.len() {
            buf.resize(total, 0);
        }
        while filled < total {
            let n = stream.read(&mut buf[filled..]).await?;
            if n == 0 {
                return Ok(());
            }
            filled += n;
        }
        let keep_alive = head.keep_alive && !head.knobs.close;
        let body = &buf[head.head_bytes..total];
        let received = Instant::now();
        stream.begin();
        let answer = respond(&mut stream, &mut bufs, shared, &head, body, keep_alive).await?;
        if let Some(log) = &shared.config.log {
            let id = head.request_id.clone();
            let id = id.and_then(|at| std::str::from_utf8(&buf[at]).ok());
            log.row(&stream, received, id, body);
        }
        match answer {
            Answer::Reset => {
                stream.reset();
                return Ok(());
            }
            Answer::Close => return Ok(()),
            Answer::Kept if !keep_alive => return Ok(()),
            Answer::Kept => {}
        }
        // Keep any pipelined bytes; shrink a buffer grown for a huge body.
        buf.copy_within(total..filled, 0);
        filled -= total;
        if buf.len() > limits::READ_BUFFER_BYTES && filled <= limits::READ_BUFFER_BYTES {
            buf.truncate(limits::READ_BUFFER_BYTES);
        }
        if filled == 0 {
            // The client sends its next request only after reading this
            // answer: wait for it instead of a `recv` that finds nothing.
            stream.readable().await;
        }
    }
}

/// Writes the response; returns true when the connection must be dropped.
async fn respond(
    stream: &mut Wire,
    bufs: &mut Buffers,
    shared: &Shared,
    head: &RequestHead,
    body: &[u8],
    keep_alive: bool,
) -> io::Result<Answer> {
    let out = &mut bufs.out;
    let flavor = match head.route {
        Route::Messages | Route::CountTokens => Flavor::Anthropic,
        Route::Responses => Flavor::Responses,
        Route::Models if head.anthropic => Flavor::Anthropic,
        _ => Flavor::OpenAi,
    };
    if let Some(answer) = plain_route(stream, out, head, flavor, keep_alive).await? {
        return Ok(answer);
    }
    if let Some((at, length)) = shared.config.stall {
        let since = shared.started.elapsed();
        if since >= at && since < at + length {
            rt::sleep(at + length - since).await;
        }
    }
    let fault = head
        .knobs
        .fault
        .unwrap_or_else(|| shared.config.faults.draw(&mut shared.rng.borrow_mut()));
    if let Some(answer) = break_framing(stream, out, flavor, fault, keep_alive, shared).await? {
        return Ok(answer);
    }
    let forced = match fault {
        Fault::Status500 => Some(500),
        Fault::Status429 => Some(429),
        _ => head.knobs.status.filter(|&s| s != 200),
    };
    if matches!(fault, Fault::Status500 | Fault::Status429) {
        count_fault(shared, fault);
    }
    if let Some(status) = forced {
        let body = flavor.error_body(status, "forced by the mock");
        write_simple(stream, out, status, body.as_bytes(), keep_alive).await?;
        return Ok(Answer::Kept);
    }
    let Ok(request) = parse_chat(body) else {
        let message = "the body is not a request this route takes";
        write_error(stream, out, flavor, 400, message).await?;
        return Ok(Answer::Close);
    };
    // A fault only a stream can show is not one for other requests.
    let fault = match fault {
        Fault::ErrorEvent if !request.stream || head.route == Route::CountTokens => Fault::None,
        Fault::CloseMidStream if head.route == Route::CountTokens => Fault::None,
        fault => fault,
    };
    count_fault(shared, fault);
    let mut rng = Rng::new(shared.rng.borrow_mut().next_u64());
    let timing = Timing::new(&head.knobs, &shared.config, fault, &mut rng);
    let dropped = reply(stream, bufs, shared, head, &request, timing, keep_alive).await?;
    Ok(if dropped { Answer::Close } else { Answer::Kept })
}

/// Writes the route's reply to a request; true when the connection must
/// then be dropped (a stream cut on purpose).
async fn reply(
    stream: &mut Wire,
    bufs: &mut Buffers,
    shared: &Shared,
    head: &RequestHead,
    request: &ChatRequest<'_>,
    timing: Timing,
    keep_alive: bool,
) -> io::Result<bool> {
    let knobs = &head.knobs;
    match head.route {
        Route::CountTokens => {
            let count = format!("{{\"input_tokens\":{}}}", request.prompt_chars.div_ceil(4));
            write_simple(stream, &mut bufs.out, 200, count.as_bytes(), keep_alive).await?;
            Ok(false)
        }
        Route::Messages => {
            anthropic::messages(stream, bufs, shared, knobs, request, timing, keep_alive).await
        }
        Route::Responses => {
            responses::respond(stream, bufs, shared, knobs, request, timing, keep_alive).await
        }
        _ => openai::chat(stream, bufs, shared, knobs, request, timing, keep_alive).await,
    }
}

/// Answers the routes that generate nothing (health, the model list, an
/// unknown route, a wrong method); `None` for a request to generate for.
async fn plain_route(
    stream: &mut Wire,
    out: &mut Vec<u8>,
    head: &RequestHead,
    flavor: Flavor,
    keep_alive: bool,
) -> io::Result<Option<Answer>> {
    let post = matches!(
        head.route,
        Route::Chat | Route::Messages | Route::Responses | Route::CountTokens
    );
    match head.route {
        Route::Health => {
            write_simple(stream, out, 200, b"{\"status\":\"ok\"}", keep_alive).await?;
            Ok(Some(Answer::Kept))
        }
        Route::NotFound => {
            write_error(stream, out, flavor, 404, "no such route").await?;
            Ok(Some(Answer::Close))
        }
        Route::Models if !head.post => {
            write_simple(stream, out, 200, models(flavor).as_bytes(), keep_alive).await?;
            Ok(Some(Answer::Kept))
        }
        _ if post != head.post => {
            let message = if post { "use POST" } else { "use GET" };
            write_error(stream, out, flavor, 405, message).await?;
            Ok(Some(Answer::Close))
        }
        _ => Ok(None),
    }
}

/// What became of the connection after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// It may carry the next request.
    Kept,
    /// It must be closed (a fault, or an error that closes it).
    Close,
    /// It was reset; nothing more may be done with it.
    Reset,
}

/// Counts a fault served (nothing for `Fault::None`).
fn count_fault(shared: &Shared, fault: Fault) {
    if let Some(i) = fault.index() {
        shared.count(|s| s.faults[i] += 1);
    }
}

/// The faults that break the HTTP exchange itself, done (and counted)
/// here; `None` for the others (answered by the route, or not a fault).
async fn break_framing(
    stream: &mut Wire,
    out: &mut Vec<u8>,
    flavor: Flavor,
    fault: Fault,
    keep_alive: bool,
    shared: &Shared,
) -> io::Result<Option<Answer>> {
    if matches!(
        fault,
        Fault::Reset | Fault::Garbage | Fault::Stall | Fault::SlowHead
    ) {
        count_fault(shared, fault);
    }
    match fault {
        Fault::Reset => Ok(Some(Answer::Reset)),
        Fault::Garbage => {
            stream
                .write_all(b"HTTP/9.9 OOPS\r\n\x01\x02 not a response \xff\r\n\r\n")
                .await?;
            Ok(Some(Answer::Close))
        }
        Fault::Stall => {
            // Until the client gives up and closes (or the mock stops).
            let mut sink = [0u8; 512];
            while stream.read(&mut sink).await? > 0 {}
            Ok(Some(Answer::Close))
        }
        Fault::SlowHead => {
            let body = flavor.error_body(503, "slow head");
            wire::simple_response(out, 503, body.as_bytes(), keep_alive);
            for byte in out.iter() {
                stream.write_all(std::slice::from_ref(byte)).await?;
                rt::sleep(limits::MOCK_SLOW_HEAD_BYTE_GAP).await;
            }
            Ok(Some(Answer::Close))
        }
        _ => Ok(None),
    }
}

/// `GET /v1/models`: the one model the mock serves, in the API's shape.
fn models(flavor: Flavor) -> String {
    match flavor {
        Flavor::Anthropic => serde_json::json!({
            "data": [{"type": "model", "id": MODEL, "display_name": "loadtest mock",
                      "created_at": "2026-01-01T00:00:00Z"}],
            "has_more": false, "first_id": MODEL, "last_id": MODEL
        }),
        _ => serde_json::json!({
            "object": "list",
            "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "loadtest"}]
        }),
    }
    .to_string()
}

/// The model `GET /v1/models` lists (any model name is answered).
const MODEL: &str = "mock-model";

/// The most recent Responses ids a shard made (bounded by
/// `limits::MOCK_RESPONSE_IDS_MAX`), so a `previous_response_id` it never
/// made, or forgot, is answered 404 as the real API does.
#[derive(Default)]
pub(super) struct ResponseIds {
    order: std::collections::VecDeque<u64>,
    known: std::collections::HashSet<u64>,
}

impl ResponseIds {
    /// Remembers id `n`, forgetting the oldest past the bound.
    pub(super) fn remember(&mut self, n: u64) {
        if self.order.len() >= limits::MOCK_RESPONSE_IDS_MAX {
            if let Some(old) = self.order.pop_front() {
                self.known.remove(&old);
            }
        }
        self.order.push_back(n);
        self.known.insert(n);
    }

    /// Whether id `n` is remembered.
    pub(super) fn knows(&self, n: u64) -> bool {
        self.known.contains(&n)
    }
}

/// Per-connection buffers, reused for every response on the connection.
#[derive(Default)]
pub(super) struct Buffers {
    /// Bytes about to be written.
    pub(super) out: Vec<u8>,
    /// A non-streamed body, before its head is known.
    pub(super) body: Vec<u8>,
    /// The fields every object of one response starts with.
    pub(super) prefix: Vec<u8>,
    /// The same for `chat.completion.chunk` objects.
    pub(super) chunk_prefix: Vec<u8>,
    /// SSE events waiting to be framed as one HTTP chunk.
    pub(super) events: Vec<u8>,
}
