//! The mock's shards: accepting connections, reading one connection's
//! requests in turn, and routing each to its reply.

use super::generate::TextCache;
use super::request::{parse_chat, parse_request_head, RequestHead, Route};
use super::wire::{write_error, write_simple, Flavor};
use super::{anthropic, openai, responses, MockConfig, MockStats};
use crate::limits;
use crate::rt;
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
                    let _ = serve_connection(stream, &shared).await;
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

/// Serves requests on one connection until it closes.
async fn serve_connection(mut stream: rt::TcpStream, shared: &Shared) -> io::Result<()> {
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
                    return write_error(&mut stream, out, 431, "request head too large").await
                }
                Err(message) => return write_error(&mut stream, out, 400, message).await,
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
        let closed = respond(&mut stream, &mut bufs, shared, &head, body, keep_alive).await?;
        if closed || !keep_alive {
            return Ok(());
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
    stream: &mut rt::TcpStream,
    bufs: &mut Buffers,
    shared: &Shared,
    head: &RequestHead,
    body: &[u8],
    keep_alive: bool,
) -> io::Result<bool> {
    let out = &mut bufs.out;
    match (head.route, head.post) {
        (Route::Health, _) => {
            write_simple(stream, out, 200, b"{\"status\":\"ok\"}", keep_alive).await?;
            Ok(false)
        }
        (Route::NotFound, _) => {
            write_error(stream, out, 404, "no such route").await?;
            Ok(true)
        }
        (Route::Chat | Route::Messages | Route::Responses, false) => {
            write_error(stream, out, 405, "use POST").await?;
            Ok(true)
        }
        (Route::Chat | Route::Messages | Route::Responses, true) => {
            if let Some((at, length)) = shared.config.stall {
                let since = shared.started.elapsed();
                if since >= at && since < at + length {
                    rt::sleep(at + length - since).await;
                }
            }
            let flavor = match head.route {
                Route::Messages => Flavor::Anthropic,
                Route::Responses => Flavor::Responses,
                _ => Flavor::OpenAi,
            };
            if let Some(status) = head.knobs.status.filter(|&s| s != 200) {
                let body = flavor.error_body(status, "forced by x-mock-status");
                write_simple(stream, out, status, body.as_bytes(), keep_alive).await?;
                return Ok(false);
            }
            let Ok(request) = parse_chat(body) else {
                write_error(stream, out, 400, "body is not a chat request").await?;
                return Ok(true);
            };
            match flavor {
                Flavor::OpenAi => {
                    openai::chat(stream, bufs, shared, &head.knobs, &request, keep_alive).await
                }
                Flavor::Anthropic => {
                    anthropic::messages(stream, bufs, shared, &head.knobs, &request, keep_alive)
                        .await
                }
                Flavor::Responses => {
                    responses::respond(stream, bufs, shared, &head.knobs, &request, keep_alive)
                        .await
                }
            }
        }
    }
}

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
