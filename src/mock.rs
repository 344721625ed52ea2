//! The built-in mock upstream: an OpenAI Chat Completions and Anthropic
//! Messages server on the same engine (pinned glommio shards, SO_REUSEPORT
//! listeners). `POST /v1/chat/completions` answers in OpenAI's format,
//! `POST /v1/messages` in Anthropic's (with its full stream event
//! sequence); both honour the same knobs.
//!
//! It exists so a load test runs out of the box, so the tests have a real
//! server to talk to, and so the generator can be benchmarked against an
//! upstream that costs little. Timing is configurable per server (flags)
//! and per request (headers, so tests can vary it):
//!
//! | knob | flag | header |
//! |---|---|---|
//! | non-stream latency | `--latency` | `x-mock-latency-ms` |
//! | time to first token | `--ttft` | `x-mock-ttft-ms` |
//! | inter-token delay | `--itl` | `x-mock-itl-ms` |
//! | output tokens (default: the request's `max_tokens`) | `--tokens` | `x-mock-tokens` |
//! | force a status | | `x-mock-status` |
//! | close after responding | | `x-mock-close: 1` |
//! | stream fault | | `x-mock-fault: truncate` or `error-event` |
//!
//! Output tokens are capped by the request's `max_tokens`, and `usage`
//! always reports the tokens actually sent. Prompt tokens are estimated as
//! one per four characters of message content (and system prompt), so a
//! conversation's growing history shows as growing prompt usage.

use crate::http::{push_decimal, push_hex};
use crate::limits;
use crate::protocol::json::{self, Kind, Scanner};
use crate::rt;
use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Mock server settings.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Delay before a non-streamed response.
    pub latency: Duration,
    /// Delay before the first streamed token.
    pub ttft: Duration,
    /// Delay between streamed tokens.
    pub itl: Duration,
    /// Output tokens per response, capped by the request's `max_tokens`;
    /// `None`: exactly the request's `max_tokens` (128 when it sets none),
    /// the way a model that never stops early would answer.
    pub tokens: Option<u32>,
    /// One shard per CPU.
    pub cpus: Vec<usize>,
    /// Stall once: requests arriving between `at` and `at + for` after the
    /// server started are answered only when the window ends (the whole
    /// server seems to freeze, as in a GC pause or a failover).
    pub stall: Option<(Duration, Duration)>,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            latency: Duration::ZERO,
            ttft: Duration::ZERO,
            itl: Duration::ZERO,
            tokens: None,
            cpus: vec![0],
            stall: None,
        }
    }
}

/// What a mock served, summed over its shards.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MockStats {
    /// Chat completion requests answered with 200.
    pub chat_responses: u64,
    /// Completion tokens sent in those responses.
    pub completion_tokens: u64,
    /// Prompt tokens reported in those responses.
    pub prompt_tokens: u64,
    /// Connections accepted.
    pub connections: u64,
}

/// A running mock server.
pub struct MockServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    listeners: Vec<i32>,
    handles: Vec<rt::ExecutorHandle<MockStats>>,
}

impl MockServer {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, waits for the shards to exit and returns what they
    /// served. Open connections are dropped. A shard that panicked is an
    /// error naming it, not a silent gap in the totals.
    pub fn stop(self) -> Result<MockStats, String> {
        self.stop.store(true, Ordering::Relaxed);
        for &fd in &self.listeners {
            rt::shutdown_fd(fd);
        }
        let mut total = MockStats::default();
        let mut failed = None;
        for (index, handle) in self.handles.into_iter().enumerate() {
            match handle.join() {
                Ok(stats) => {
                    total.chat_responses += stats.chat_responses;
                    total.completion_tokens += stats.completion_tokens;
                    total.prompt_tokens += stats.prompt_tokens;
                    total.connections += stats.connections;
                }
                Err(why) => {
                    failed.get_or_insert(format!("mock shard {index} panicked: {why}"));
                }
            }
        }
        failed.map_or(Ok(total), Err)
    }

    /// Serves until the process is killed. Returns only when a shard has
    /// ended, which it never does unless it panicked: the error names the
    /// first shard to end, whichever it is, so a mock that lost a shard
    /// stops rather than serving on with part of its capacity.
    pub fn wait(self) -> String {
        let (ended, first) = std::sync::mpsc::channel();
        for (index, handle) in self.handles.into_iter().enumerate() {
            let ended = ended.clone();
            std::thread::spawn(move || {
                let why = match handle.join() {
                    Ok(_) => "it stopped".to_string(),
                    Err(why) => format!("it panicked: {why}"),
                };
                let _ = ended.send(format!("mock shard {index} ended: {why}"));
            });
        }
        drop(ended);
        first
            .recv()
            .unwrap_or_else(|_| "every mock shard ended".to_string())
    }
}

/// Starts the mock on `listen` (port 0 picks one), one shard per CPU.
pub fn start(listen: SocketAddr, config: MockConfig) -> io::Result<MockServer> {
    if config.cpus.is_empty() {
        return Err(io::Error::other("the mock needs at least one CPU"));
    }
    // SO_REUSEPORT would let us share a port with another process's
    // listener and silently split the traffic; refuse a busy port instead.
    if listen.port() != 0 {
        std::net::TcpListener::bind(listen)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {listen}: {e}")))?;
    }
    // Accepting connections must not stall on the descriptor table growing
    // (see `host::presize_fd_table`): size it for as many as the limit allows.
    crate::host::presize_fd_table(u64::MAX);
    let first = rt::bind_reuseport(listen, limits::MOCK_LISTEN_BACKLOG)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {listen}: {e}")))?;
    let addr = rt::local_addr(&first)?;
    let mut fds: Vec<OwnedFd> = vec![first];
    for _ in 1..config.cpus.len() {
        fds.push(rt::bind_reuseport(addr, limits::MOCK_LISTEN_BACKLOG)?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let listeners = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let mut handles = Vec::new();
    for (index, (fd, &cpu)) in fds.into_iter().zip(config.cpus.iter()).enumerate() {
        let config = config.clone();
        let stop = stop.clone();
        let handle = rt::start_executor(&format!("mock-{index}"), Some(cpu), move || {
            serve(fd, config, stop, started)
        })?;
        handles.push(handle);
    }
    Ok(MockServer {
        addr,
        stop,
        listeners,
        handles,
    })
}

async fn serve(
    fd: OwnedFd,
    config: MockConfig,
    stop: Arc<AtomicBool>,
    started: Instant,
) -> MockStats {
    let listener = rt::TcpListener::from_owned(fd);
    let shared = Rc::new(Shared {
        started,
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

struct Shared {
    /// When the server started (for `MockConfig::stall`).
    started: Instant,
    config: MockConfig,
    text: RefCell<TextCache>,
    /// Connections being served now (bounded by
    /// `limits::MOCK_CONNECTIONS_PER_SHARD_MAX`).
    open_connections: Cell<usize>,
    stats: Cell<MockStats>,
}

impl Shared {
    fn count(&self, update: impl FnOnce(&mut MockStats)) {
        let mut stats = self.stats.get();
        update(&mut stats);
        self.stats.set(stats);
    }
}

/// Per-request knobs read from `x-mock-*` headers.
#[derive(Debug, Default, Clone, Copy)]
struct Knobs {
    latency_ms: Option<u64>,
    ttft_ms: Option<u64>,
    itl_ms: Option<u64>,
    tokens: Option<u64>,
    status: Option<u16>,
    close: bool,
    fault: Fault,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Fault {
    #[default]
    None,
    /// Stop the stream halfway and close the connection (no `[DONE]`).
    Truncate,
    /// Send an error event halfway, then end normally.
    ErrorEvent,
}

struct RequestHead {
    head_bytes: usize,
    body_bytes: usize,
    post: bool,
    route: Route,
    keep_alive: bool,
    knobs: Knobs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Chat,
    Messages,
    Health,
    NotFound,
}

fn parse_request_head(buf: &[u8]) -> Result<Option<RequestHead>, &'static str> {
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
        "/health" | "/healthz" => Route::Health,
        _ => Route::NotFound,
    };
    let mut head = RequestHead {
        head_bytes,
        body_bytes: 0,
        post: request.method == Some("POST"),
        route,
        keep_alive: request.version != Some(0),
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
            head.knobs.fault = match value {
                "truncate" => Fault::Truncate,
                "error-event" => Fault::ErrorEvent,
                _ => Fault::None,
            };
        }
    }
    if head.body_bytes > limits::MOCK_REQUEST_BODY_BYTES_MAX {
        return Err("request body too large");
    }
    Ok(Some(head))
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
        (Route::Chat | Route::Messages, false) => {
            write_error(stream, out, 405, "use POST").await?;
            Ok(true)
        }
        (Route::Chat | Route::Messages, true) => {
            if let Some((at, length)) = shared.config.stall {
                let since = shared.started.elapsed();
                if since >= at && since < at + length {
                    rt::sleep(at + length - since).await;
                }
            }
            let flavor = if head.route == Route::Messages {
                Flavor::Anthropic
            } else {
                Flavor::OpenAi
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
                    chat(stream, bufs, shared, &head.knobs, &request, keep_alive).await
                }
                Flavor::Anthropic => {
                    messages(stream, bufs, shared, &head.knobs, &request, keep_alive).await
                }
            }
        }
    }
}

/// Per-connection buffers, reused for every response on the connection.
#[derive(Default)]
struct Buffers {
    /// Bytes about to be written.
    out: Vec<u8>,
    /// A non-streamed body, before its head is known.
    body: Vec<u8>,
    /// The fields every object of one response starts with.
    prefix: Vec<u8>,
    /// The same for `chat.completion.chunk` objects.
    chunk_prefix: Vec<u8>,
    /// SSE events waiting to be framed as one HTTP chunk.
    events: Vec<u8>,
}

/// What the mock reads from a chat request.
struct ChatRequest<'a> {
    /// The model, as raw JSON string content (echoed back unchanged, so
    /// its escapes stay valid).
    model: Option<&'a [u8]>,
    /// Characters of message content (escape sequences count as written).
    prompt_chars: u64,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    stream: bool,
    include_usage: bool,
}

/// Reads a chat request with the JSON skimmer; nothing is allocated.
fn parse_chat(body: &[u8]) -> Result<ChatRequest<'_>, json::Bad> {
    let mut request = ChatRequest {
        model: None,
        prompt_chars: 0,
        max_tokens: None,
        max_completion_tokens: None,
        stream: false,
        include_usage: false,
    };
    let mut s = Scanner::new(body);
    s.object(|s, key| {
        match key.raw {
            b"model" => request.model = s.string_or_null()?.map(|m| m.raw),
            b"messages" | b"system" => request.prompt_chars += content_chars(s)?,
            b"max_tokens" => request.max_tokens = s.u64_or_null()?,
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

/// The generated text, built once per shard and sliced per response: a
/// 128-token reply costs one copy instead of 128 small appends.
#[derive(Default)]
struct TextCache {
    text: Vec<u8>,
    /// `ends[i]` is where token i's text ends.
    ends: Vec<usize>,
}

impl TextCache {
    /// The text of the first `tokens` tokens (bounded by
    /// `limits::MOCK_OUTPUT_TOKENS_MAX`: about 8 MB at most).
    fn first(&mut self, tokens: u64) -> &[u8] {
        while (self.ends.len() as u64) < tokens {
            push_word(&mut self.text, self.ends.len() as u64);
            self.ends.push(self.text.len());
        }
        match tokens {
            0 => &[],
            n => &self.text[..self.ends[n as usize - 1]],
        }
    }
}

/// Words the mock "generates"; token i is a space and word i mod len.
const WORDS: &[&str] = &[
    "the", "gateway", "routes", "each", "request", "to", "a", "model", "and", "streams", "tokens",
    "back", "while", "latency", "stays", "low", "under", "load",
];

async fn chat(
    stream: &mut rt::TcpStream,
    bufs: &mut Buffers,
    shared: &Shared,
    knobs: &Knobs,
    request: &ChatRequest<'_>,
    keep_alive: bool,
) -> io::Result<bool> {
    let Buffers {
        out,
        body,
        prefix,
        chunk_prefix,
        events,
    } = bufs;
    let config = &shared.config;
    let g = generation(shared, knobs, request);
    let (id, tokens) = (g.id, g.tokens);
    let finish = if g.hit_cap { "length" } else { "stop" };
    let created = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let model = request.model.unwrap_or(b"mock");
    prefix.clear();
    prefix.extend_from_slice(b"{\"id\":\"chatcmpl-mock-");
    push_decimal(prefix, id);
    prefix.extend_from_slice(b"\",\"object\":\"chat.completion");
    let chunk_prefix_at = prefix.len();
    prefix.extend_from_slice(b"\",\"created\":");
    push_decimal(prefix, created);
    prefix.extend_from_slice(b",\"model\":\"");
    prefix.extend_from_slice(model);
    prefix.push(b'"');
    let usage = Usage {
        prompt: g.prompt_tokens,
        completion: tokens,
    };
    if !request.stream {
        let delay = Timing::new(knobs, config).latency;
        if !delay.is_zero() {
            rt::sleep(delay).await;
        }
        body.clear();
        body.extend_from_slice(prefix);
        body.extend_from_slice(
            b",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"",
        );
        body.extend_from_slice(shared.text.borrow_mut().first(tokens));
        body.extend_from_slice(b"\"},\"finish_reason\":\"");
        body.extend_from_slice(finish.as_bytes());
        body.extend_from_slice(b"\"}],");
        usage.write(body);
        body.push(b'}');
        write_simple(stream, out, 200, body, keep_alive).await?;
        return Ok(false);
    }
    // Streamed: `chat.completion.chunk` objects.
    chunk_prefix.clear();
    chunk_prefix.extend_from_slice(&prefix[..chunk_prefix_at]);
    chunk_prefix.extend_from_slice(b".chunk");
    chunk_prefix.extend_from_slice(&prefix[chunk_prefix_at..]);
    stream_head(out, keep_alive);
    events.clear();
    event(events, chunk_prefix, |e| {
        e.extend_from_slice(b"\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]")
    });
    let timing = Timing::new(knobs, config);
    let cut = stream_tokens(
        stream,
        out,
        events,
        tokens,
        timing,
        |e, i| {
            event(e, chunk_prefix, |e| {
                e.extend_from_slice(b"\"content\":\"");
                push_word(e, i);
                e.extend_from_slice(b"\"},\"finish_reason\":null}]");
            })
        },
        |e| {
            e.extend_from_slice(
                b"data: {\"error\":{\"message\":\"mock fault\",\"type\":\"server_error\"}}\n\n",
            )
        },
    )
    .await?;
    if cut {
        return Ok(true);
    }
    event(events, chunk_prefix, |e| {
        e.extend_from_slice(b"},\"finish_reason\":\"");
        e.extend_from_slice(finish.as_bytes());
        e.extend_from_slice(b"\"}]");
    });
    if request.include_usage {
        events.extend_from_slice(b"data: ");
        events.extend_from_slice(chunk_prefix);
        events.extend_from_slice(b",\"choices\":[],");
        usage.write(events);
        events.extend_from_slice(b"}\n\n");
    }
    events.extend_from_slice(b"data: [DONE]\n\n");
    push_chunk(out, events);
    out.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(out).await?;
    Ok(false)
}

/// Which API a response imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    OpenAi,
    Anthropic,
}

impl Flavor {
    /// An error body in this API's shape.
    fn error_body(self, status: u16, message: &str) -> String {
        match self {
            Flavor::OpenAi => {
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

/// What a response will contain, shared by both flavors.
struct Generation {
    id: u64,
    tokens: u64,
    hit_cap: bool,
    prompt_tokens: u64,
}

fn generation(shared: &Shared, knobs: &Knobs, request: &ChatRequest<'_>) -> Generation {
    let cap = request
        .max_completion_tokens
        .or(request.max_tokens)
        .unwrap_or(u64::MAX);
    let wanted = knobs
        .tokens
        .or(shared.config.tokens.map(u64::from))
        .unwrap_or(if cap == u64::MAX { 128 } else { cap });
    let tokens = wanted
        .min(cap)
        .min(u64::from(limits::MOCK_OUTPUT_TOKENS_MAX));
    let sent = if request.stream && knobs.fault == Fault::Truncate {
        tokens / 2
    } else {
        tokens
    };
    let prompt_tokens = request.prompt_chars.div_ceil(4);
    // Each 200 is counted here, so the count so far numbers this one.
    // Counted before writing: a client can finish reading before this
    // task resumes after its last write.
    let id = shared.stats.get().chat_responses;
    shared.count(|s| {
        s.chat_responses += 1;
        s.completion_tokens += sent;
        s.prompt_tokens += prompt_tokens;
    });
    Generation {
        id,
        tokens,
        hit_cap: tokens < wanted,
        prompt_tokens,
    }
}

/// How a response is paced and broken: the server's settings, overridden
/// per request by the `x-mock-*` headers.
#[derive(Debug, Clone, Copy)]
struct Timing {
    latency: Duration,
    ttft: Duration,
    itl: Duration,
    fault: Fault,
}

impl Timing {
    fn new(knobs: &Knobs, config: &MockConfig) -> Self {
        let ms = |knob: Option<u64>, default: Duration| knob.map_or(default, Duration::from_millis);
        Timing {
            latency: ms(knobs.latency_ms, config.latency),
            ttft: ms(knobs.ttft_ms, config.ttft),
            itl: ms(knobs.itl_ms, config.itl),
            fault: knobs.fault,
        }
    }
}

/// Sends `tokens` content events, `token(events, i)` formatting event i,
/// with the time to first token, the gap between tokens and the fault
/// halfway (`error` formats the error event). Events are batched into one
/// write unless a delay separates them. Returns true when the stream was
/// cut (the connection must then be dropped).
async fn stream_tokens(
    stream: &mut rt::TcpStream,
    out: &mut Vec<u8>,
    events: &mut Vec<u8>,
    tokens: u64,
    timing: Timing,
    token: impl Fn(&mut Vec<u8>, u64),
    error: impl Fn(&mut Vec<u8>),
) -> io::Result<bool> {
    if !timing.ttft.is_zero() {
        flush_events(stream, out, events).await?;
        rt::sleep(timing.ttft).await;
    }
    for i in 0..tokens {
        if i > 0 && !timing.itl.is_zero() {
            flush_events(stream, out, events).await?;
            rt::sleep(timing.itl).await;
        }
        if i == tokens / 2 && timing.fault != Fault::None {
            if timing.fault == Fault::Truncate {
                push_chunk(out, events);
                stream.write_all(out).await?;
                return Ok(true);
            }
            error(events);
        }
        token(events, i);
    }
    Ok(false)
}

/// Appends one named SSE event.
fn named_event(out: &mut Vec<u8>, name: &str, data: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    data(out);
    out.extend_from_slice(b"\n\n");
}

/// An Anthropic Messages response.
async fn messages(
    stream: &mut rt::TcpStream,
    bufs: &mut Buffers,
    shared: &Shared,
    knobs: &Knobs,
    request: &ChatRequest<'_>,
    keep_alive: bool,
) -> io::Result<bool> {
    let Buffers {
        out, body, events, ..
    } = bufs;
    let config = &shared.config;
    let g = generation(shared, knobs, request);
    let model = request.model.unwrap_or(b"mock");
    let stop_reason: &[u8] = if g.hit_cap {
        b"max_tokens"
    } else {
        b"end_turn"
    };
    if !request.stream {
        let delay = Timing::new(knobs, config).latency;
        if !delay.is_zero() {
            rt::sleep(delay).await;
        }
        body.clear();
        body.extend_from_slice(b"{\"id\":\"msg_mock_");
        push_decimal(body, g.id);
        body.extend_from_slice(b"\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"");
        body.extend_from_slice(model);
        body.extend_from_slice(b"\",\"content\":[{\"type\":\"text\",\"text\":\"");
        body.extend_from_slice(shared.text.borrow_mut().first(g.tokens));
        body.extend_from_slice(b"\"}],\"stop_reason\":\"");
        body.extend_from_slice(stop_reason);
        body.extend_from_slice(b"\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":");
        push_decimal(body, g.prompt_tokens);
        body.extend_from_slice(b",\"output_tokens\":");
        push_decimal(body, g.tokens);
        body.extend_from_slice(b"}}");
        write_simple(stream, out, 200, body, keep_alive).await?;
        return Ok(false);
    }
    stream_head(out, keep_alive);
    events.clear();
    named_event(events, "message_start", |e| {
        e.extend_from_slice(b"{\"type\":\"message_start\",\"message\":{\"id\":\"msg_mock_");
        push_decimal(e, g.id);
        e.extend_from_slice(b"\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"");
        e.extend_from_slice(model);
        e.extend_from_slice(b"\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":");
        push_decimal(e, g.prompt_tokens);
        e.extend_from_slice(b",\"output_tokens\":1}}}");
    });
    named_event(events, "content_block_start", |e| {
        e.extend_from_slice(
            b"{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}",
        )
    });
    named_event(events, "ping", |e| {
        e.extend_from_slice(b"{\"type\":\"ping\"}")
    });
    let timing = Timing::new(knobs, config);
    let cut = stream_tokens(
        stream,
        out,
        events,
        g.tokens,
        timing,
        |e, i| {
            named_event(e, "content_block_delta", |e| {
                e.extend_from_slice(
                    b"{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"",
                );
                push_word(e, i);
                e.extend_from_slice(b"\"}}");
            })
        },
        |e| {
            named_event(e, "error", |e| {
                e.extend_from_slice(
                    b"{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"mock fault\"}}",
                )
            })
        },
    )
    .await?;
    if cut {
        return Ok(true);
    }
    named_event(events, "content_block_stop", |e| {
        e.extend_from_slice(b"{\"type\":\"content_block_stop\",\"index\":0}")
    });
    named_event(events, "message_delta", |e| {
        e.extend_from_slice(b"{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"");
        e.extend_from_slice(stop_reason);
        e.extend_from_slice(b"\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":");
        push_decimal(e, g.tokens);
        e.extend_from_slice(b"}}");
    });
    named_event(events, "message_stop", |e| {
        e.extend_from_slice(b"{\"type\":\"message_stop\"}")
    });
    push_chunk(out, events);
    out.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(out).await?;
    Ok(false)
}

/// Starts a chunked event-stream response in `out`.
fn stream_head(out: &mut Vec<u8>, keep_alive: bool) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n");
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes what is buffered (head and pending events) now.
async fn flush_events(
    stream: &mut rt::TcpStream,
    out: &mut Vec<u8>,
    events: &mut Vec<u8>,
) -> io::Result<()> {
    push_chunk(out, events);
    events.clear();
    stream.write_all(out).await?;
    out.clear();
    Ok(())
}

struct Usage {
    prompt: u64,
    completion: u64,
}

impl Usage {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\"usage\":{\"prompt_tokens\":");
        push_decimal(out, self.prompt);
        out.extend_from_slice(b",\"completion_tokens\":");
        push_decimal(out, self.completion);
        out.extend_from_slice(b",\"total_tokens\":");
        push_decimal(out, self.prompt + self.completion);
        out.push(b'}');
    }
}

fn push_word(out: &mut Vec<u8>, i: u64) {
    out.push(b' ');
    out.extend_from_slice(WORDS[(i % WORDS.len() as u64) as usize].as_bytes());
}

/// Appends `data: <prefix>,"choices":[{"index":0,"delta":{` + the rest + `}\n\n`.
fn event(out: &mut Vec<u8>, chunk_prefix: &[u8], rest: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(chunk_prefix);
    out.extend_from_slice(b",\"choices\":[{\"index\":0,\"delta\":{");
    rest(out);
    out.extend_from_slice(b"}\n\n");
}

/// Frames `data` as one HTTP chunk (nothing for empty data, which would
/// otherwise end the body).
fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    push_hex(out, data.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

async fn write_simple(
    stream: &mut rt::TcpStream,
    out: &mut Vec<u8>,
    status: u16,
    body: &[u8],
    keep_alive: bool,
) -> io::Result<()> {
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
    stream.write_all(out).await
}

async fn write_json_error(
    stream: &mut rt::TcpStream,
    out: &mut Vec<u8>,
    status: u16,
    message: &str,
    keep_alive: bool,
) -> io::Result<()> {
    let body = serde_json::json!({"error": {"message": message, "type": "mock_error"}}).to_string();
    write_simple(stream, out, status, body.as_bytes(), keep_alive).await
}

async fn write_error(
    stream: &mut rt::TcpStream,
    out: &mut Vec<u8>,
    status: u16,
    message: &str,
) -> io::Result<()> {
    write_json_error(stream, out, status, message, false).await
}

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

    /// A server made of the given shards, with no listeners.
    fn server_with(shards: Vec<rt::ExecutorHandle<MockStats>>) -> MockServer {
        MockServer {
            addr: "127.0.0.1:9".parse().unwrap(),
            stop: Arc::new(AtomicBool::new(false)),
            listeners: Vec::new(),
            handles: shards,
        }
    }

    fn shard(panics: bool) -> rt::ExecutorHandle<MockStats> {
        rt::start_executor("mock-test", None, move || async move {
            if panics {
                panic!("shard failed on purpose");
            }
            MockStats {
                chat_responses: 3,
                ..MockStats::default()
            }
        })
        .unwrap()
    }

    #[test]
    fn a_panicked_shard_is_an_error_not_a_gap_in_the_totals() {
        let why = server_with(vec![shard(false), shard(true)])
            .stop()
            .unwrap_err();
        assert!(why.starts_with("mock shard 1 panicked"), "{why}");
        assert!(why.contains("shard failed on purpose"), "{why}");
        let served = server_with(vec![shard(false), shard(false)])
            .stop()
            .unwrap();
        assert_eq!(served.chat_responses, 6);
    }

    #[test]
    fn wait_returns_when_any_shard_ends_and_says_which() {
        // Shard 0 never ends; shard 1 panics at once.
        let forever = rt::start_executor("mock-test", None, || async {
            std::future::pending::<MockStats>().await
        })
        .unwrap();
        let why = server_with(vec![forever, shard(true)]).wait();
        assert!(why.starts_with("mock shard 1 ended: it panicked"), "{why}");
        assert!(why.contains("shard failed on purpose"), "{why}");
    }

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
        let body = Flavor::Anthropic.error_body(429, "slow down");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "rate_limit_error");
    }

    #[test]
    fn text_cache_slices_by_token() {
        let mut cache = TextCache::default();
        assert_eq!(cache.first(0), b"");
        assert_eq!(cache.first(3), b" the gateway routes");
        assert_eq!(cache.first(1), b" the");
        let long = cache.first(40).to_vec();
        assert!(long.starts_with(b" the gateway routes"));
        assert_eq!(long.iter().filter(|&&b| b == b' ').count(), 40);
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
        assert_eq!(head.knobs.fault, Fault::Truncate);
        assert!(parse_request_head(b"GET /health HTTP/1.1\r\n")
            .unwrap()
            .is_none());
        assert!(parse_request_head(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n").is_err());
    }
}
