//! Shard-local statistics for one stage, and their merge.
//!
//! A shard records every finished request into its own `StageMetrics`: plain
//! counters, a fixed array of error classes, a fixed array of status codes,
//! and bounded HDR histograms in microseconds. Nothing here is shared or
//! atomic. At a stage boundary the coordinator receives each shard's value
//! and merges them with `merge`, which is exact (histograms add bucket by
//! bucket), so percentiles of the merged value are those of all requests.

pub use super::hist::Hist;
use super::metrics_wire::MetricsWire;
use crate::limits;
use serde::{Deserialize, Serialize};

/// Why a request failed. Counted in a fixed array, never as strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ErrorClass {
    /// The target refused the connection.
    ConnRefused,
    /// The connect did not finish within the connect timeout.
    ConnTimeout,
    /// The generator ran out of ephemeral ports (EADDRNOTAVAIL).
    GenPortExhaustion,
    /// The generator ran out of file descriptors (EMFILE/ENFILE).
    GenFdExhaustion,
    /// Any other connect failure.
    ConnOther,
    /// The TLS handshake failed (an alert, a timeout, a close, no common
    /// protocol).
    TlsHandshake,
    /// The server's certificate was refused (untrusted, expired, another
    /// name).
    TlsCert,
    /// The whole request exceeded its timeout.
    Timeout,
    /// The peer reset the connection.
    ConnReset,
    /// The peer closed the connection before the response was complete.
    Eof,
    /// Any other socket error after connecting.
    IoOther,
    /// TLS broke after the handshake: an alert, or a record that is not
    /// valid TLS.
    TlsProtocol,
    /// The response head or framing was malformed or too large.
    BadResponse,
    /// A non-streamed body was larger than `limits::BODY_BYTES_MAX`.
    BodyTooLarge,
    /// A body or SSE event was not the protocol's JSON.
    BadJson,
    /// A 200 stream carried an error event.
    StreamErrorEvent,
    /// A stream ended before its end marker.
    TruncatedStream,
    /// HTTP 200 but no generated content.
    EmptyCompletion,
    /// HTTP 429.
    Http429,
    /// Any other 4xx.
    Http4xx,
    /// HTTP 5xx.
    Http5xx,
    /// Any other non-2xx status.
    HttpOther,
    /// The request code panicked; the shard survived and counted it.
    Panic,
}

impl ErrorClass {
    /// Every class, in report order.
    pub const ALL: [ErrorClass; 23] = [
        ErrorClass::ConnRefused,
        ErrorClass::ConnTimeout,
        ErrorClass::GenPortExhaustion,
        ErrorClass::GenFdExhaustion,
        ErrorClass::ConnOther,
        ErrorClass::TlsHandshake,
        ErrorClass::TlsCert,
        ErrorClass::Timeout,
        ErrorClass::ConnReset,
        ErrorClass::Eof,
        ErrorClass::IoOther,
        ErrorClass::TlsProtocol,
        ErrorClass::BadResponse,
        ErrorClass::BodyTooLarge,
        ErrorClass::BadJson,
        ErrorClass::StreamErrorEvent,
        ErrorClass::TruncatedStream,
        ErrorClass::EmptyCompletion,
        ErrorClass::Http429,
        ErrorClass::Http4xx,
        ErrorClass::Http5xx,
        ErrorClass::HttpOther,
        ErrorClass::Panic,
    ];

    /// Number of classes.
    pub const COUNT: usize = Self::ALL.len();

    /// Name used in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::ConnRefused => "conn_refused",
            ErrorClass::ConnTimeout => "conn_timeout",
            ErrorClass::GenPortExhaustion => "gen_port_exhaustion",
            ErrorClass::GenFdExhaustion => "gen_fd_exhaustion",
            ErrorClass::ConnOther => "conn_other",
            ErrorClass::TlsHandshake => "tls_handshake",
            ErrorClass::TlsCert => "tls_cert",
            ErrorClass::Timeout => "timeout",
            ErrorClass::ConnReset => "conn_reset",
            ErrorClass::Eof => "eof",
            ErrorClass::IoOther => "io_other",
            ErrorClass::TlsProtocol => "tls_protocol",
            ErrorClass::BadResponse => "bad_response",
            ErrorClass::BodyTooLarge => "body_too_large",
            ErrorClass::BadJson => "bad_json",
            ErrorClass::StreamErrorEvent => "stream_error_event",
            ErrorClass::TruncatedStream => "truncated_stream",
            ErrorClass::EmptyCompletion => "empty_completion",
            ErrorClass::Http429 => "http_429",
            ErrorClass::Http4xx => "http_4xx",
            ErrorClass::Http5xx => "http_5xx",
            ErrorClass::HttpOther => "http_other",
            ErrorClass::Panic => "panic",
        }
    }

    /// Whether the generator itself, not the target, caused it.
    pub fn is_generator_side(self) -> bool {
        matches!(
            self,
            ErrorClass::GenPortExhaustion | ErrorClass::GenFdExhaustion | ErrorClass::Panic
        )
    }

    /// The class named `name` (as `name` writes it).
    pub fn from_name(name: &str) -> Option<ErrorClass> {
        ErrorClass::ALL.iter().copied().find(|c| c.name() == name)
    }

    /// Whether it happened while opening the connection.
    pub fn is_connect(self) -> bool {
        matches!(
            self,
            ErrorClass::ConnRefused
                | ErrorClass::ConnTimeout
                | ErrorClass::ConnOther
                | ErrorClass::TlsHandshake
                | ErrorClass::TlsCert
                | ErrorClass::GenPortExhaustion
                | ErrorClass::GenFdExhaustion
        )
    }

    /// The class for a non-2xx status.
    pub fn for_status(status: u16) -> ErrorClass {
        match status {
            429 => ErrorClass::Http429,
            400..=499 => ErrorClass::Http4xx,
            500..=599 => ErrorClass::Http5xx,
            _ => ErrorClass::HttpOther,
        }
    }
}

/// Status codes 100..=599 are counted individually; others in one slot.
pub(super) const STATUS_SLOTS: usize = 501;

/// What happened at one turn position of conversations (turn 1, 2, ...),
/// to show context growing with the turn.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TurnRow {
    /// Requests at this turn (measured window only).
    pub requests: u64,
    /// Of those, successful.
    pub ok: u64,
    /// Successful requests whose server usage gave a prompt count.
    pub prompt_samples: u64,
    /// Sum of those prompt counts.
    pub prompt_tokens: u64,
    /// Sum of successful latencies, microseconds.
    pub latency_us: u64,
    /// Successful streamed requests with a TTFT.
    pub ttft_samples: u64,
    /// Sum of their TTFTs, microseconds.
    pub ttft_us: u64,
}

impl TurnRow {
    fn merge(&mut self, other: &TurnRow) {
        self.requests += other.requests;
        self.ok += other.ok;
        self.prompt_samples += other.prompt_samples;
        self.prompt_tokens += other.prompt_tokens;
        self.latency_us += other.latency_us;
        self.ttft_samples += other.ttft_samples;
        self.ttft_us += other.ttft_us;
    }

    /// Mean prompt tokens (server usage), if any sample.
    pub fn mean_prompt_tokens(&self) -> Option<f64> {
        (self.prompt_samples > 0).then(|| self.prompt_tokens as f64 / self.prompt_samples as f64)
    }

    /// Mean latency in milliseconds, if any success.
    pub fn mean_latency_ms(&self) -> Option<f64> {
        (self.ok > 0).then(|| self.latency_us as f64 / self.ok as f64 / 1000.0)
    }

    /// Mean TTFT in milliseconds, if any sample.
    pub fn mean_ttft_ms(&self) -> Option<f64> {
        (self.ttft_samples > 0).then(|| self.ttft_us as f64 / self.ttft_samples as f64 / 1000.0)
    }
}

/// What finished in one second of a stage (for progress, the live
/// endpoint and the time series), warm-up included.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    /// Requests that finished.
    pub requests: u64,
    /// Of those, the failures by class.
    pub error_classes: [u64; ErrorClass::COUNT],
    /// Latency of the successful ones.
    pub latency: Hist,
    /// TTFT of the successful streamed ones.
    pub ttft: Hist,
    /// Gaps between content events of the successful streamed ones; kept
    /// only for the live endpoint (`Plan::live`), it records every token.
    pub itl: Hist,
    /// Open loop: arrivals sent.
    pub arrivals_sent: u64,
    /// Open loop: how late those were sent.
    pub sched_lag: Hist,
}

impl Window {
    /// Failures, all classes together.
    pub fn errors(&self) -> u64 {
        self.error_classes.iter().sum()
    }

    /// Adds another shard's window.
    pub fn merge(&mut self, other: &Window) {
        self.requests += other.requests;
        for (mine, theirs) in self.error_classes.iter_mut().zip(&other.error_classes) {
            *mine += theirs;
        }
        self.latency.merge(&other.latency);
        self.ttft.merge(&other.ttft);
        self.itl.merge(&other.itl);
        self.arrivals_sent += other.arrivals_sent;
        self.sched_lag.merge(&other.sched_lag);
    }
}

/// A scenario's counters in the running stage so far (measured window,
/// and warm-up apart), sent by each shard with every second: the live
/// endpoint's per-scenario and per-service view, without histograms.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LaneCounts {
    /// Requests measured.
    pub requests: u64,
    /// Of those, successful.
    pub ok: u64,
    /// Requests in the warm-up.
    pub warmup_requests: u64,
    /// Failures by class.
    pub errors: [u64; ErrorClass::COUNT],
    /// Open loop: arrivals sent.
    pub arrivals_sent: u64,
    /// Open loop: arrivals dropped at `max_inflight`.
    pub dropped_arrivals: u64,
}

impl LaneCounts {
    /// The counters of `m`.
    pub fn of(m: &StageMetrics) -> LaneCounts {
        LaneCounts {
            requests: m.requests,
            ok: m.ok,
            warmup_requests: m.warmup_requests,
            errors: m.errors,
            arrivals_sent: m.arrivals_sent,
            dropped_arrivals: m.dropped_arrivals,
        }
    }

    /// Adds another shard's counts.
    pub fn add(&mut self, other: &LaneCounts) {
        self.requests += other.requests;
        self.ok += other.ok;
        self.warmup_requests += other.warmup_requests;
        for (mine, theirs) in self.errors.iter_mut().zip(&other.errors) {
            *mine += theirs;
        }
        self.arrivals_sent += other.arrivals_sent;
        self.dropped_arrivals += other.dropped_arrivals;
    }
}

/// Everything one shard measured in one stage (or their merge).
///
/// In a summary it is written through `MetricsWire`: error classes and
/// status codes as name → count maps, histograms as `Hist` writes them,
/// per-turn rows with their sums (so they merge exactly) and their means.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "MetricsWire", try_from = "MetricsWire")]
pub struct StageMetrics {
    /// Requests that started inside the measured window and finished.
    pub requests: u64,
    /// Of those, the ones that succeeded.
    pub ok: u64,
    /// Requests that started during warm-up (not in any other figure).
    pub warmup_requests: u64,
    /// Failures by class.
    pub errors: [u64; ErrorClass::COUNT],
    /// Responses by status code (index = code − 100; last slot: other).
    pub status: Box<[u64; STATUS_SLOTS]>,
    /// Highest `Retry-After` seen on a 429, in seconds.
    pub retry_after_s_max: Option<u32>,
    /// Whole-request latency: request written to response complete.
    pub latency: Hist,
    /// Time to the first content-bearing SSE event (streamed only).
    pub ttft: Hist,
    /// Time to the first reasoning event (streamed, reasoning models).
    pub ttfr: Hist,
    /// Time to the first response byte.
    pub ttfb: Hist,
    /// Gaps between consecutive content-bearing events.
    pub itl: Hist,
    /// Time to open a new connection (includes waiting for a connect
    /// slot; TCP only, TLS is `tls`).
    pub connect: Hist,
    /// TLS handshakes on new connections (https targets).
    pub tls: Hist,
    /// Open loop: latency from the intended send time (coordinated
    /// omission corrected). Empty in closed-loop stages.
    pub latency_corrected: Hist,
    /// Open loop: TTFT from the intended send time.
    pub ttft_corrected: Hist,
    /// Open loop: how late each request started (actual − intended).
    pub sched_lag: Hist,
    /// Open loop: arrivals due in the measured window.
    pub arrivals: u64,
    /// Open loop: arrivals not sent because `max_inflight` conversations
    /// were already in flight.
    pub dropped_arrivals: u64,
    /// Open loop: arrivals due in the measured window that the stage
    /// ended before sending (the generator fell behind); never sent late.
    pub missed_arrivals: u64,
    /// Open loop: arrivals actually sent within the measured window, by
    /// their send time; the achieved rate is this over the window.
    pub arrivals_sent: u64,
    /// Open loop: most conversations in flight at once (summed over shards
    /// when merged, so an upper bound).
    pub inflight_peak: u64,
    /// Prompt tokens reported by the server.
    pub prompt_tokens: u64,
    /// Completion tokens reported by the server.
    pub completion_tokens: u64,
    /// Successful responses that carried no usage.
    pub usage_missing: u64,
    /// Prompt tokens estimated from request text, for responses without
    /// usage (never mixed into `prompt_tokens`).
    pub prompt_tokens_estimated: u64,
    /// Completion tokens estimated from response text, likewise.
    pub completion_tokens_estimated: u64,
    /// Prompt tokens the server says came from its prompt cache.
    pub cached_tokens: u64,
    /// Conversations whose first turn started in the measured window.
    pub conversations_started: u64,
    /// Conversations that finished every turn (last turn measured).
    pub conversations_completed: u64,
    /// Conversations ended by a failed turn.
    pub conversations_failed: u64,
    /// Conversations cut short by the end of the stage.
    pub conversations_cut: u64,
    /// Conversations ended because the next request would have exceeded
    /// `limits::REQUEST_BYTES_MAX`, or a reply passed what a history keeps
    /// (`limits::BODY_BYTES_MAX`).
    pub context_limit: u64,
    /// Per turn position; the last row collects every later turn.
    pub turns: [TurnRow; limits::TURN_ROWS],
    /// SSE events received.
    pub sse_events: u64,
    /// SSE events that carried content.
    pub content_events: u64,
    /// SSE events that carried reasoning.
    pub reasoning_events: u64,
    /// Reasoning tokens reported by the server (part of the completion
    /// tokens).
    pub reasoning_tokens: u64,
    /// Events missing from streams' sequence numbers.
    pub sequence_gaps: u64,
    /// Generated content bytes.
    pub content_bytes: u64,
    /// Inter-token gaps not recorded because a response exceeded
    /// `limits::ITL_GAPS_PER_RESPONSE_MAX`.
    pub itl_gaps_dropped: u64,
    /// New connections opened.
    pub connects: u64,
    /// TLS handshakes completed on them.
    pub tls_handshakes: u64,
    /// Of those, sessions resumed (ticket or session id) rather than
    /// negotiated in full.
    pub tls_resumed: u64,
    /// Requests retried once on a fresh connection because a reused idle
    /// connection turned out to be closed by the server.
    pub stale_retries: u64,
    /// Connections open at the end of the stage (summed over shards when
    /// merged).
    pub connections_open: u64,
}

impl StageMetrics {
    /// Empty metrics.
    pub fn new() -> Self {
        StageMetrics {
            requests: 0,
            ok: 0,
            warmup_requests: 0,
            errors: [0; ErrorClass::COUNT],
            status: Box::new([0; STATUS_SLOTS]),
            retry_after_s_max: None,
            latency: Hist::new(),
            ttft: Hist::new(),
            ttfr: Hist::new(),
            ttfb: Hist::new(),
            itl: Hist::new(),
            connect: Hist::new(),
            tls: Hist::new(),
            latency_corrected: Hist::new(),
            ttft_corrected: Hist::new(),
            sched_lag: Hist::new(),
            arrivals: 0,
            dropped_arrivals: 0,
            missed_arrivals: 0,
            arrivals_sent: 0,
            inflight_peak: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            usage_missing: 0,
            prompt_tokens_estimated: 0,
            completion_tokens_estimated: 0,
            cached_tokens: 0,
            conversations_started: 0,
            conversations_completed: 0,
            conversations_failed: 0,
            conversations_cut: 0,
            context_limit: 0,
            turns: [TurnRow::default(); limits::TURN_ROWS],
            sse_events: 0,
            content_events: 0,
            reasoning_events: 0,
            reasoning_tokens: 0,
            sequence_gaps: 0,
            content_bytes: 0,
            itl_gaps_dropped: 0,
            connects: 0,
            tls_handshakes: 0,
            tls_resumed: 0,
            stale_retries: 0,
            connections_open: 0,
        }
    }

    /// The row for turn `turn` (0-based).
    pub fn turn_row(&mut self, turn: u64) -> &mut TurnRow {
        let i = (turn as usize).min(limits::TURN_ROWS - 1);
        &mut self.turns[i]
    }

    /// Rows of turns that happened, as (1-based turn, row); the last row
    /// stands for that turn and every later one.
    pub fn turn_rows(&self) -> Vec<(usize, TurnRow)> {
        self.turns
            .iter()
            .enumerate()
            .filter(|(_, r)| r.requests > 0)
            .map(|(i, r)| (i + 1, *r))
            .collect()
    }

    /// Counts a response status.
    #[inline]
    pub fn count_status(&mut self, status: u16) {
        let slot = match status {
            100..=599 => usize::from(status - 100),
            _ => STATUS_SLOTS - 1,
        };
        self.status[slot] += 1;
    }

    /// Counts a failure.
    #[inline]
    pub fn count_error(&mut self, class: ErrorClass) {
        self.errors[class as usize] += 1;
    }

    /// Failures of one class.
    pub fn error_count(&self, class: ErrorClass) -> u64 {
        self.errors[class as usize]
    }

    /// All failures.
    pub fn errors_total(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// Non-zero status counts, by code (code 0 = outside 100..=599).
    pub fn status_counts(&self) -> Vec<(u16, u64)> {
        self.status
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(i, &n)| {
                let code = if i == STATUS_SLOTS - 1 {
                    0
                } else {
                    i as u16 + 100
                };
                (code, n)
            })
            .collect()
    }

    /// Non-zero error counts, by class.
    pub fn error_counts(&self) -> Vec<(ErrorClass, u64)> {
        ErrorClass::ALL
            .iter()
            .map(|&c| (c, self.error_count(c)))
            .filter(|&(_, n)| n > 0)
            .collect()
    }

    /// Adds another shard's metrics into this one.
    pub fn merge(&mut self, other: &StageMetrics) {
        self.requests += other.requests;
        self.ok += other.ok;
        self.warmup_requests += other.warmup_requests;
        for (a, b) in self.errors.iter_mut().zip(other.errors.iter()) {
            *a += b;
        }
        for (a, b) in self.status.iter_mut().zip(other.status.iter()) {
            *a += b;
        }
        self.retry_after_s_max = self.retry_after_s_max.max(other.retry_after_s_max);
        self.latency.merge(&other.latency);
        self.ttft.merge(&other.ttft);
        self.ttfr.merge(&other.ttfr);
        self.ttfb.merge(&other.ttfb);
        self.itl.merge(&other.itl);
        self.connect.merge(&other.connect);
        self.tls.merge(&other.tls);
        self.latency_corrected.merge(&other.latency_corrected);
        self.ttft_corrected.merge(&other.ttft_corrected);
        self.sched_lag.merge(&other.sched_lag);
        self.arrivals += other.arrivals;
        self.dropped_arrivals += other.dropped_arrivals;
        self.missed_arrivals += other.missed_arrivals;
        self.arrivals_sent += other.arrivals_sent;
        self.inflight_peak += other.inflight_peak;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.usage_missing += other.usage_missing;
        self.prompt_tokens_estimated += other.prompt_tokens_estimated;
        self.completion_tokens_estimated += other.completion_tokens_estimated;
        self.cached_tokens += other.cached_tokens;
        self.conversations_started += other.conversations_started;
        self.conversations_completed += other.conversations_completed;
        self.conversations_failed += other.conversations_failed;
        self.conversations_cut += other.conversations_cut;
        self.context_limit += other.context_limit;
        for (a, b) in self.turns.iter_mut().zip(other.turns.iter()) {
            a.merge(b);
        }
        self.sse_events += other.sse_events;
        self.content_events += other.content_events;
        self.reasoning_events += other.reasoning_events;
        self.reasoning_tokens += other.reasoning_tokens;
        self.sequence_gaps += other.sequence_gaps;
        self.content_bytes += other.content_bytes;
        self.itl_gaps_dropped += other.itl_gaps_dropped;
        self.connects += other.connects;
        self.tls_handshakes += other.tls_handshakes;
        self.tls_resumed += other.tls_resumed;
        self.stale_retries += other.stale_retries;
        self.connections_open += other.connections_open;
    }
}

impl Default for StageMetrics {
    fn default() -> Self {
        StageMetrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_is_exact() {
        let mut a = StageMetrics::new();
        let mut b = StageMetrics::new();
        let mut all = StageMetrics::new();
        for i in 0..1000u64 {
            let target = if i % 3 == 0 { &mut a } else { &mut b };
            target.latency.record_us(i * 37 % 5000);
            target.requests += 1;
            target.count_status(200);
            all.latency.record_us(i * 37 % 5000);
            all.requests += 1;
            all.count_status(200);
        }
        b.count_error(ErrorClass::Http5xx);
        b.count_status(503);
        b.count_status(42);
        a.merge(&b);
        assert_eq!(a.requests, 1000);
        assert_eq!(a.latency.count(), all.latency.count());
        for p in [50.0, 90.0, 99.0, 99.9] {
            assert_eq!(a.latency.percentile_ms(p), all.latency.percentile_ms(p));
        }
        assert_eq!(a.status_counts(), vec![(200, 1000), (503, 1), (0, 1)]);
        assert_eq!(a.error_counts(), vec![(ErrorClass::Http5xx, 1)]);
        assert_eq!(a.errors_total(), 1);
    }

    #[test]
    fn metrics_round_trip_through_json() {
        let mut m = StageMetrics::new();
        m.requests = 7;
        m.ok = 5;
        m.count_status(200);
        m.count_status(503);
        m.count_status(42);
        m.count_error(ErrorClass::Http5xx);
        m.count_error(ErrorClass::Timeout);
        m.latency.record_us(1_234);
        m.ttft.record_us(99);
        m.turn_row(0).requests = 4;
        m.turn_row(0).prompt_samples = 2;
        m.turn_row(0).prompt_tokens = 300;
        m.turn_row(40).requests = 1;
        m.conversations_cut = 2;
        m.cached_tokens = 11;
        m.retry_after_s_max = Some(3);
        let text = serde_json::to_string(&m).unwrap();
        let back: StageMetrics = serde_json::from_str(&text).unwrap();
        assert_eq!(back, m);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["status_codes"]["other"], 1);
        assert_eq!(value["turns"][0]["prompt_tokens_mean"], 150.0);
        assert_eq!(value["turns"][1]["and_later"], true);
        let mut bad = value.clone();
        bad["errors"]["no_such_class"] = serde_json::json!(1);
        let err = serde_json::from_value::<StageMetrics>(bad).unwrap_err();
        assert!(err.to_string().contains("no_such_class"), "{err}");
        let mut bad = value;
        bad["status_codes"]["700"] = serde_json::json!(1);
        assert!(serde_json::from_value::<StageMetrics>(bad).is_err());
    }

    #[test]
    fn class_names_are_unique_and_statuses_map() {
        let mut names: Vec<_> = ErrorClass::ALL.iter().map(|c| c.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ErrorClass::COUNT);
        assert_eq!(ErrorClass::for_status(429), ErrorClass::Http429);
        assert_eq!(ErrorClass::for_status(404), ErrorClass::Http4xx);
        assert_eq!(ErrorClass::for_status(502), ErrorClass::Http5xx);
        assert_eq!(ErrorClass::for_status(302), ErrorClass::HttpOther);
        for (i, c) in ErrorClass::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            assert_eq!(ErrorClass::from_name(c.name()), Some(*c));
        }
    }
}
