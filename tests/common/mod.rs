//! Helpers shared by the integration tests: CPU choice and the in-process
//! mock. Each test binary uses a subset, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod cli;

use loadtest::mock::{self, MockConfig, MockServer};

/// (generator CPUs, mock CPUs): the first and the last available CPU, the
/// same one on a single-CPU machine.
pub fn cpus() -> (Vec<usize>, Vec<usize>) {
    let allowed = loadtest::host::allowed_cpus();
    (vec![allowed[0]], vec![*allowed.last().unwrap()])
}

/// Starts the mock on a free loopback port, on the mock CPUs, after
/// `tune` adjusts its settings.
pub fn start_mock(tune: impl FnOnce(&mut MockConfig)) -> MockServer {
    let mut config = MockConfig {
        cpus: cpus().1,
        ..MockConfig::default()
    };
    tune(&mut config);
    mock::start("127.0.0.1:0".parse().unwrap(), config).expect("mock starts")
}

use loadtest::http::sse;
use loadtest::protocol::openai::OpenAiChat;
use loadtest::protocol::{Auth, EventKind, Protocol, ProtocolError, Reply, TurnRequest};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Blocks the calling thread for `length` on the `nth` call (from 1) that
/// `calls` counts: a hook that makes one shard lose its CPU once.
pub fn block_on_nth_call(calls: &AtomicU64, nth: u64, length: Duration) {
    if calls.fetch_add(1, Ordering::Relaxed) + 1 == nth {
        std::thread::sleep(length);
    }
}

/// OpenAI Chat Completions with hooks run before each request body is
/// written and before each non-streamed body is decoded: a test adapter
/// that misbehaves on purpose (panics, blocks).
#[derive(Debug)]
pub struct Hooked {
    /// Runs before each `write_body` (shards write single-turn requests
    /// once, at start-up).
    pub before_write: fn(),
    /// Runs before each `parse_body`.
    pub before_body: fn(),
}

impl Protocol for Hooked {
    fn name(&self) -> &'static str {
        "hooked-openai"
    }
    fn default_path(&self) -> &'static str {
        OpenAiChat.default_path()
    }
    fn default_auth(&self) -> Auth {
        OpenAiChat.default_auth()
    }
    fn fixed_headers(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    fn write_body(&self, request: &TurnRequest<'_>, out: &mut Vec<u8>) {
        (self.before_write)();
        OpenAiChat.write_body(request, out)
    }
    fn parse_body(&self, body: &[u8], reply: &mut Reply) -> Result<(), ProtocolError> {
        (self.before_body)();
        OpenAiChat.parse_body(body, reply)
    }
    fn parse_event(
        &self,
        event: sse::Event<'_>,
        reply: &mut Reply,
    ) -> Result<EventKind, ProtocolError> {
        OpenAiChat.parse_event(event, reply)
    }
}
