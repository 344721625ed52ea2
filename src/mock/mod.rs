//! The built-in mock upstream: an OpenAI Chat Completions, OpenAI
//! Responses and Anthropic Messages server on the same engine (pinned
//! glommio shards, SO_REUSEPORT listeners). `POST /v1/chat/completions`
//! answers in OpenAI's format, `POST /v1/responses` with the Responses
//! API's typed events, `POST /v1/messages` in Anthropic's (each with its
//! full stream event sequence); all honour the same knobs.
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
//! | a fault (see `faults`) | `--faults NAME=RATE,…` | `x-mock-fault: NAME` |
//!
//! Delays take a fixed value, a uniform range or a log-normal median and
//! 99th percentile (`timing`); headers take fixed milliseconds. Draws come
//! from each shard's generator, seeded from `--seed`, so a hostile run
//! repeats. `GET /v1/models` and `POST /v1/messages/count_tokens` answer
//! as the real APIs do.
//!
//! Output tokens are capped by the request's `max_tokens`, and `usage`
//! always reports the tokens actually sent. Prompt tokens are estimated as
//! one per four characters of message content (and system prompt), so a
//! conversation's growing history shows as growing prompt usage.

//!
//! Files: `server` (accepting, one connection's requests, routing),
//! `request` (the request head and the chat body), `generate` (what a
//! reply says), `timing` (when), `faults` (what goes wrong), `openai`,
//! `anthropic` and `responses` (each API's reply), `wire` (HTTP framing,
//! SSE chunks, errors, the faults that break the framing).

mod anthropic;
mod faults;
mod generate;
mod log;
mod openai;
mod request;
mod responses;
mod server;
mod timing;
mod wire;

pub use faults::{Fault, FaultRates};
pub use log::RequestLog;
pub use timing::Delay;

use crate::limits;
use crate::rt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Mock server settings.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Delay before a non-streamed response (drawn per response).
    pub latency: Delay,
    /// Delay before the first streamed token (drawn per response).
    pub ttft: Delay,
    /// Delay between streamed tokens (drawn per token).
    pub itl: Delay,
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
    /// Per-request fault rates (none by default).
    pub faults: FaultRates,
    /// Seeds each shard's draws (delays and faults), so a hostile run
    /// can be repeated.
    pub seed: u64,
    /// Serve TLS with this configuration (`None`: plain HTTP).
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// Write a row per answered request here (`--log-requests`).
    pub log: Option<RequestLog>,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            latency: Delay::default(),
            ttft: Delay::default(),
            itl: Delay::default(),
            tokens: None,
            cpus: vec![0],
            stall: None,
            faults: FaultRates::default(),
            seed: 0x6d6f_636b,
            tls: None,
            log: None,
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
    /// TLS handshakes completed.
    pub tls_handshakes: u64,
    /// Of those, resumed sessions.
    pub tls_resumed: u64,
    /// TLS handshakes that failed (the client refused the certificate,
    /// spoke plain HTTP, timed out).
    pub tls_failed: u64,
    /// Faults served, by `Fault::ALL` index (asked for or drawn).
    pub faults: [u64; Fault::ALL.len()],
}

impl MockStats {
    /// How many times `fault` was served.
    pub fn fault(&self, fault: Fault) -> u64 {
        fault.index().map_or(0, |i| self.faults[i])
    }
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
                    total.tls_handshakes += stats.tls_handshakes;
                    total.tls_resumed += stats.tls_resumed;
                    total.tls_failed += stats.tls_failed;
                    for (sum, n) in total.faults.iter_mut().zip(stats.faults) {
                        *sum += n;
                    }
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
            server::serve(fd, index, config, stop, started)
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
}
