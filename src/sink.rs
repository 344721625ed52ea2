//! `results-<id>.jsonl`: one line per finished turn, written by one writer
//! thread so no shard ever waits on a disk.
//!
//! Each shard owns the sending end of its own bounded queue
//! (`limits::SINK_QUEUE_PER_SHARD` records). A shard hands over a compact,
//! fixed-size `Record` with `try_send`; when its queue is full the record
//! is dropped and counted (`sink_dropped`), and the request itself is
//! unaffected (the in-memory statistics stay complete). The writer thread
//! drains every queue in turn, formats lines and appends them with one
//! `write` per batch of whole lines, at least every
//! `limits::SINK_FLUSH_INTERVAL`. A process killed with SIGKILL therefore
//! leaves only whole lines, except possibly a partial last line, which
//! `read_lines` (and any careful reader) skips.

use crate::content::UUID_LEN;
use crate::http::push_decimal;
use crate::limits;
use crate::plan::Plan;
use crate::results::{ErrorClass, FinishedTurn};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One finished turn, as a shard hands it over. Copy, no heap.
#[derive(Debug, Clone, Copy)]
pub struct Record {
    /// The conversation's UUID (ASCII).
    pub conv_uuid: [u8; UUID_LEN],
    /// Index into `Plan::scenarios`.
    pub scenario: u16,
    /// Index into `Plan::stages`.
    pub stage: u16,
    /// The shard that sent it.
    pub shard: u16,
    /// Turn number, 1-based.
    pub turn: u32,
    /// Turns this conversation was to have.
    pub turns: u32,
    /// Open loop: when it was due.
    pub intended: Option<Instant>,
    /// When it was sent (or the connect began, for a failed connect).
    pub start: Instant,
    /// Whole request, microseconds (successful requests).
    pub latency_us: Option<u64>,
    /// Time to first token, microseconds.
    pub ttft_us: Option<u64>,
    /// Time to first byte, microseconds.
    pub ttfb_us: Option<u64>,
    /// Median inter-token gap, microseconds.
    pub itl_p50_us: Option<u64>,
    /// Largest inter-token gap, microseconds.
    pub itl_max_us: Option<u64>,
    /// Connect time when this request opened its connection.
    pub connect_us: Option<u64>,
    /// TLS handshake of that new connection.
    pub tls_us: Option<u64>,
    /// HTTP status (0: no response head).
    pub status: u16,
    /// Prompt tokens.
    pub prompt_tokens: Option<u64>,
    /// Completion tokens.
    pub completion_tokens: Option<u64>,
    /// The token counts are client estimates (the server sent no usage).
    pub tokens_estimated: bool,
    /// Started during warm-up.
    pub warmup: bool,
    /// Why it failed.
    pub error: Option<ErrorClass>,
}

/// Where a finished turn belongs: what its record says beside the
/// turn's own figures.
#[derive(Debug, Clone, Copy)]
pub struct RecordKey {
    /// The conversation's UUID (ASCII).
    pub conv_uuid: [u8; UUID_LEN],
    /// Index into `Plan::scenarios`.
    pub scenario: u16,
    /// Index into `Plan::stages`.
    pub stage: u16,
    /// The shard that sent it.
    pub shard: u16,
    /// Open loop: when it was due.
    pub intended: Option<Instant>,
    /// When it was sent (or the connect began, for a failed connect).
    pub start: Instant,
}

impl Record {
    /// The record of a finished turn. `scratch` is reused to find the
    /// median inter-token gap without allocating.
    pub fn of(key: RecordKey, turn: &FinishedTurn<'_>, scratch: &mut Vec<u32>) -> Record {
        let us = |d: Duration| d.as_micros() as u64;
        let gaps = turn.itl_gaps_us;
        let (itl_p50_us, itl_max_us) = if gaps.is_empty() {
            (None, None)
        } else {
            scratch.clear();
            scratch.extend_from_slice(gaps);
            let mid = scratch.len() / 2;
            let (_, median, _) = scratch.select_nth_unstable(mid);
            let median = u64::from(*median);
            (Some(median), gaps.iter().max().map(|&g| u64::from(g)))
        };
        let (prompt_tokens, completion_tokens, tokens_estimated) = turn.tokens();
        Record {
            conv_uuid: key.conv_uuid,
            scenario: key.scenario,
            stage: key.stage,
            shard: key.shard,
            turn: (turn.turn + 1) as u32,
            turns: turn.turns as u32,
            intended: key.intended,
            start: key.start,
            latency_us: turn.latency.filter(|_| turn.ok()).map(us),
            ttft_us: turn.ttft.map(us),
            ttfb_us: turn.ttfb.map(us),
            itl_p50_us,
            itl_max_us,
            connect_us: turn.connect.map(us),
            tls_us: turn.tls.map(us),
            status: turn.status,
            prompt_tokens,
            completion_tokens,
            tokens_estimated,
            warmup: turn.warmup,
            error: turn.error,
        }
    }
}

/// The shards' ends of the sink, and the counter of dropped records.
#[derive(Debug, Clone)]
pub struct SinkSender {
    queue: SyncSender<Record>,
    dropped: Arc<AtomicU64>,
}

impl SinkSender {
    /// Hands a record over without waiting; drops and counts it when the
    /// queue is full.
    #[inline]
    pub fn send(&self, record: Record) {
        if self.queue.try_send(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A running writer thread.
#[derive(Debug)]
pub struct Sink {
    path: PathBuf,
    senders: Vec<SinkSender>,
    dropped: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    writer: Option<JoinHandle<io::Result<u64>>>,
}

impl Sink {
    /// Creates `path` and starts the writer for `shards` queues. Times are
    /// written as Unix microseconds, anchored at this call.
    pub fn start(path: &Path, plan: &Plan, shards: usize, run_id: &str) -> io::Result<Sink> {
        // Never into another run's file: the name carries the run id, and
        // a name already taken is an error, not a shared file.
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let dropped = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut senders = Vec::with_capacity(shards);
        let mut receivers = Vec::with_capacity(shards);
        for _ in 0..shards {
            let (tx, rx) = mpsc::sync_channel(limits::SINK_QUEUE_PER_SHARD);
            senders.push(SinkSender {
                queue: tx,
                dropped: dropped.clone(),
            });
            receivers.push(rx);
        }
        let names = Names::new(plan, run_id);
        let writer_stop = stop.clone();
        let writer = std::thread::Builder::new()
            .name("loadtest-sink".into())
            .spawn(move || write_loop(file, receivers, names, writer_stop))?;
        Ok(Sink {
            path: path.to_path_buf(),
            senders,
            dropped,
            stop,
            writer: Some(writer),
        })
    }

    /// The sender for shard `index`.
    pub fn sender(&self, index: usize) -> SinkSender {
        self.senders[index].clone()
    }

    /// Records dropped so far because a queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Where the lines go.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes what is queued, stops the writer and returns the number of
    /// lines written and of records dropped.
    pub fn finish(mut self) -> io::Result<(u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.senders.clear();
        let written = match self.writer.take().map(JoinHandle::join) {
            Some(Ok(result)) => result?,
            Some(Err(_)) => return Err(io::Error::other("the JSONL writer thread panicked")),
            None => 0,
        };
        Ok((written, self.dropped()))
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What the writer needs to turn indices into names and instants into
/// Unix time; names are stored already JSON-encoded (quoted, escaped).
struct Names {
    /// Per scenario lane: name, protocol, streamed, service (`null`
    /// without one).
    scenarios: Vec<(String, String, bool, String)>,
    stages: Vec<String>,
    /// Turns the records' instants into Unix time.
    clock: crate::host::UnixClock,
    run: String,
    /// Requests carry an id in the correlation header (`request_id`).
    request_ids: bool,
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"?\"".into())
}

impl Names {
    fn new(plan: &Plan, run_id: &str) -> Self {
        Names {
            scenarios: plan
                .scenarios
                .iter()
                .map(|s| {
                    (
                        json_string(&s.name),
                        json_string(s.protocol.name()),
                        s.stream,
                        plan.services
                            .get(s.service)
                            .map_or("null".to_string(), |v| json_string(&v.name)),
                    )
                })
                .collect(),
            stages: plan
                .stages
                .iter()
                .map(|s| json_string(&s.label()))
                .collect(),
            request_ids: plan.correlation_header.is_some(),
            clock: crate::host::UnixClock::now(),
            run: json_string(run_id),
        }
    }

    fn unix_us(&self, at: Instant) -> u64 {
        self.clock.unix_us(at)
    }
}

// Each field is written as one literal holding its key (`"name":`), then
// its value and a comma: the writer formats every turn of the run, and
// building keys piece by piece showed up in profiles.

fn uint(out: &mut Vec<u8>, key: &[u8], value: Option<u64>) {
    out.extend_from_slice(key);
    match value {
        Some(v) => push_decimal(out, v),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b',');
}

/// Microseconds as milliseconds with three decimals (exact), or null.
fn millis(out: &mut Vec<u8>, key: &[u8], us: Option<u64>) {
    out.extend_from_slice(key);
    match us {
        Some(us) => {
            push_decimal(out, us / 1000);
            let frac = us % 1000;
            out.extend_from_slice(&[
                b'.',
                b'0' + (frac / 100) as u8,
                b'0' + (frac / 10 % 10) as u8,
                b'0' + (frac % 10) as u8,
            ]);
        }
        None => out.extend_from_slice(b"null"),
    }
    out.push(b',');
}

fn raw(out: &mut Vec<u8>, key: &[u8], json: &str) {
    out.extend_from_slice(key);
    out.extend_from_slice(json.as_bytes());
    out.push(b',');
}

/// The `request_id` field: the id the correlation header carried (null
/// when none was sent).
fn request_id(out: &mut Vec<u8>, names: &Names, record: &Record) {
    if names.request_ids {
        let id = crate::content::RequestId::new(&record.conv_uuid, u64::from(record.turn));
        out.extend_from_slice(b"\"request_id\":\"");
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(b"\",");
    } else {
        out.extend_from_slice(b"\"request_id\":null,");
    }
}

/// Formats one record as a JSON line (with the newline), by hand: the
/// writer handles tens of thousands of lines a second per shard, and
/// building a `serde_json::Value` per line cost several times more.
fn format(record: &Record, names: &Names, out: &mut Vec<u8>) {
    let (scenario, protocol, stream, service) =
        names.scenarios.get(usize::from(record.scenario)).map_or(
            ("\"?\"", "\"?\"", false, "null"),
            |(name, protocol, stream, service)| {
                (name.as_str(), protocol.as_str(), *stream, service.as_str())
            },
        );
    let stage = names
        .stages
        .get(usize::from(record.stage))
        .map_or("\"?\"", String::as_str);
    let transfer = match (record.latency_us, record.ttfb_us) {
        (Some(l), Some(b)) => Some(l.saturating_sub(b)),
        _ => None,
    };
    out.extend_from_slice(b"{\"conv_uuid\":\"");
    out.extend_from_slice(&record.conv_uuid);
    out.extend_from_slice(b"\",");
    request_id(out, names, record);
    raw(out, b"\"scenario\":", scenario);
    raw(out, b"\"service\":", service);
    raw(out, b"\"protocol\":", protocol);
    uint(out, b"\"turn\":", Some(u64::from(record.turn)));
    uint(out, b"\"turns\":", Some(u64::from(record.turns)));
    raw(out, b"\"stream\":", if stream { "true" } else { "false" });
    raw(out, b"\"stage\":", stage);
    uint(out, b"\"stage_index\":", Some(u64::from(record.stage)));
    uint(
        out,
        b"\"intended_start_us\":",
        record.intended.map(|at| names.unix_us(at)),
    );
    uint(out, b"\"start_us\":", Some(names.unix_us(record.start)));
    millis(out, b"\"latency_ms\":", record.latency_us);
    millis(out, b"\"ttft_ms\":", record.ttft_us);
    millis(out, b"\"ttfb_ms\":", record.ttfb_us);
    millis(out, b"\"itl_p50_ms\":", record.itl_p50_us);
    millis(out, b"\"itl_max_ms\":", record.itl_max_us);
    millis(out, b"\"connect_ms\":", record.connect_us);
    millis(out, b"\"tls_ms\":", record.tls_us);
    millis(out, b"\"transfer_ms\":", transfer);
    uint(out, b"\"status\":", Some(u64::from(record.status)));
    uint(out, b"\"prompt_tokens\":", record.prompt_tokens);
    uint(out, b"\"completion_tokens\":", record.completion_tokens);
    let source = match (record.prompt_tokens, record.tokens_estimated) {
        (None, false) => "null",
        (_, true) => "\"estimated\"",
        (_, false) => "\"server\"",
    };
    raw(out, b"\"tokens_source\":", source);
    raw(
        out,
        b"\"warmup\":",
        if record.warmup { "true" } else { "false" },
    );
    match record.error {
        Some(class) => {
            out.extend_from_slice(b"\"error\":\"");
            out.extend_from_slice(class.name().as_bytes());
            out.extend_from_slice(b"\",");
        }
        None => out.extend_from_slice(b"\"error\":null,"),
    }
    uint(out, b"\"shard\":", Some(u64::from(record.shard)));
    out.extend_from_slice(b"\"run\":");
    out.extend_from_slice(names.run.as_bytes());
    out.extend_from_slice(b"}\n");
}

fn write_loop(
    mut file: File,
    receivers: Vec<Receiver<Record>>,
    names: Names,
    stop: Arc<AtomicBool>,
) -> io::Result<u64> {
    let mut buf = Vec::with_capacity(limits::SINK_BATCH_BYTES + 4096);
    let mut written = 0u64;
    let mut last_flush = Instant::now();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let mut got = 0usize;
        let mut open = 0usize;
        for rx in &receivers {
            loop {
                match rx.try_recv() {
                    Ok(record) => {
                        format(&record, &names, &mut buf);
                        got += 1;
                        written += 1;
                        if buf.len() >= limits::SINK_BATCH_BYTES {
                            file.write_all(&buf)?;
                            buf.clear();
                            last_flush = Instant::now();
                        }
                    }
                    Err(TryRecvError::Empty) => {
                        open += 1;
                        break;
                    }
                    Err(TryRecvError::Disconnected) => break,
                }
            }
        }
        let idle = got == 0;
        if !buf.is_empty() && (idle || last_flush.elapsed() >= limits::SINK_FLUSH_INTERVAL) {
            file.write_all(&buf)?;
            buf.clear();
            last_flush = Instant::now();
        }
        if idle && (stopping || open == 0) {
            file.flush()?;
            return Ok(written);
        }
        if idle {
            std::thread::sleep(limits::SINK_POLL);
        }
    }
}

/// Reads a JSONL file the way a careful reader should: every whole line
/// parsed, a partial last line (from a crash) skipped and reported.
pub fn read_lines(path: &Path) -> io::Result<(Vec<serde_json::Value>, bool)> {
    let bytes = std::fs::read(path)?;
    let mut lines = Vec::new();
    let mut partial = false;
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        match memchr::memchr(b'\n', rest) {
            Some(end) => {
                let line = &rest[..end];
                rest = &rest[end + 1..];
                if line.is_empty() {
                    continue;
                }
                let value = serde_json::from_slice(line).map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("bad line: {e}"))
                })?;
                lines.push(value);
            }
            None => {
                partial = true;
                break;
            }
        }
    }
    Ok((lines, partial))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_valid_json_with_every_field() {
        let profile = crate::config::parse(
            r#"{"defaults":{"target":"http://127.0.0.1:1"},"stages":"1:1s,@5:1s",
                "scenarios":[{"name":"a\\\"b"}]}"#,
        )
        .unwrap();
        let plan = crate::plan::build(&profile, &Default::default(), vec![0]).unwrap();
        let names = Names::new(&plan, "20261122T000000Z-0000abcd");
        let start = Instant::now();
        let record = Record {
            conv_uuid: *b"0b5e2c1a-0000-4000-8000-000000000001",
            scenario: 0,
            stage: 1,
            shard: 3,
            turn: 2,
            turns: 4,
            intended: Some(start),
            start: start + Duration::from_micros(250),
            latency_us: Some(12_345),
            ttft_us: Some(1_005),
            ttfb_us: Some(999),
            itl_p50_us: Some(20),
            itl_max_us: None,
            connect_us: None,
            tls_us: Some(2_500),
            status: 200,
            prompt_tokens: Some(40),
            completion_tokens: Some(7),
            tokens_estimated: false,
            warmup: false,
            error: Some(ErrorClass::TruncatedStream),
        };
        let mut out = Vec::new();
        format(&record, &names, &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        // The exact line, minus the wall-clock fields.
        let golden = format!("{}/tests/golden/results.jsonl", env!("CARGO_MANIFEST_DIR"));
        let mut fixed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        fixed["start_us"] = serde_json::json!(0);
        fixed["intended_start_us"] = serde_json::json!(0);
        let mut line = serde_json::to_string(&fixed).unwrap();
        line.push('\n');
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&golden, &line).unwrap();
        }
        assert_eq!(std::fs::read_to_string(&golden).unwrap_or_default(), line);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["scenario"], "a\\\"b");
        assert_eq!(v["protocol"], "openai-chat");
        assert_eq!(v["stage"], "@5:1s");
        assert_eq!(v["turn"], 2);
        assert_eq!(v["latency_ms"], 12.345);
        assert_eq!(v["ttft_ms"], 1.005);
        assert_eq!(v["itl_p50_ms"], 0.02);
        assert_eq!(v["transfer_ms"], 11.346);
        assert!(v["itl_max_ms"].is_null() && v.get("dns_ms").is_none() && v["tls_ms"] == 2.5);
        assert_eq!(v["error"], "truncated_stream");
        assert_eq!(v["tokens_source"], "server");
        assert_eq!(v["run"], "20261122T000000Z-0000abcd");
        assert_eq!(
            v["start_us"].as_u64().unwrap() - v["intended_start_us"].as_u64().unwrap(),
            250
        );
        assert_eq!(v.as_object().unwrap().len(), 28);
        assert_eq!(v["service"], serde_json::Value::Null);
        // The profile keeps the default correlation header, so each turn
        // has its own id: the conversation and the turn number.
        assert_eq!(
            v["request_id"],
            format!("{}-t{}", v["conv_uuid"].as_str().unwrap(), v["turn"])
        );
    }

    #[test]
    fn a_record_is_as_small_as_the_queue_bound_assumes() {
        // limits::SINK_QUEUE_PER_SHARD prices a record at ~230 bytes.
        let size = std::mem::size_of::<Record>();
        assert!(size <= 256, "{size} bytes");
    }

    #[test]
    fn partial_last_lines_are_skipped() {
        let dir = std::env::temp_dir().join(format!("lt-sink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.jsonl");
        std::fs::write(&path, "{\"a\":1}\n{\"a\":2}\n{\"a\":").unwrap();
        let (lines, partial) = read_lines(&path).unwrap();
        assert_eq!(lines.len(), 2);
        assert!(partial);
        std::fs::write(&path, "{\"a\":1}\n").unwrap();
        let (lines, partial) = read_lines(&path).unwrap();
        assert_eq!(lines.len(), 1);
        assert!(!partial);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
