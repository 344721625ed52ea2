//! Folding one finished turn into the statistics: a pure function of the
//! turn's figures, so what a request counts as is tested without sockets.
//!
//! The engine describes each finished request once, as a `FinishedTurn`
//! (durations and counts, no instants), and the same description feeds
//! the stage's `StageMetrics`, the live per-second `Window` and the JSONL
//! record.

use super::metrics::{ErrorClass, StageMetrics, Window};
use crate::content::estimate_tokens;
use std::time::Duration;

/// Everything that is counted about one finished request.
#[derive(Debug, Clone, Copy, Default)]
pub struct FinishedTurn<'a> {
    /// Turn of its conversation, 0-based.
    pub turn: u64,
    /// Turns the conversation was to have.
    pub turns: u64,
    /// It was due before the measured window (warm-up): counted apart.
    pub warmup: bool,
    /// Why it failed; `None` for a success.
    pub error: Option<ErrorClass>,
    /// Status code (0 when no head arrived).
    pub status: u16,
    /// Time spent opening a new connection for it (TCP).
    pub connect: Option<Duration>,
    /// The TLS handshake on that new connection.
    pub tls: Option<Duration>,
    /// That handshake resumed a session.
    pub tls_resumed: bool,
    /// It was retried once after a stale keep-alive connection.
    pub stale_retry: bool,
    /// Time to the first response byte.
    pub ttfb: Option<Duration>,
    /// Time to the first content-bearing event (streamed only).
    pub ttft: Option<Duration>,
    /// Time to the first reasoning event (streamed, when there was one).
    pub ttfr: Option<Duration>,
    /// Request written to response complete.
    pub latency: Option<Duration>,
    /// Open loop: how late it was sent (actual − intended).
    pub late: Option<Duration>,
    /// `Retry-After` of a 429.
    pub retry_after_s: Option<u32>,
    /// Gaps between content events, microseconds.
    pub itl_gaps_us: &'a [u32],
    /// Gaps not kept (past `limits::ITL_GAPS_PER_RESPONSE_MAX`).
    pub itl_gaps_dropped: u64,
    /// SSE events received.
    pub sse_events: u64,
    /// Of those, carrying content.
    pub content_events: u64,
    /// Of those, carrying reasoning.
    pub reasoning_events: u64,
    /// Events missing from the stream's sequence numbers.
    pub sequence_gaps: u64,
    /// Generated content bytes.
    pub content_bytes: u64,
    /// Prompt tokens, from the server's usage.
    pub prompt_tokens: Option<u64>,
    /// Completion tokens, from the server's usage.
    pub completion_tokens: Option<u64>,
    /// Prompt tokens the server served from its cache.
    pub cached_tokens: Option<u64>,
    /// Reasoning tokens, from the server's usage.
    pub reasoning_tokens: Option<u64>,
    /// Bytes of prompt text sent (for estimates when usage is missing).
    pub prompt_bytes: u64,
}

impl FinishedTurn<'_> {
    /// Whether it succeeded.
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// (prompt, completion) tokens as a per-turn record reports them, and
    /// whether they are estimates: the server's counts, or estimates from
    /// the text when it sent none; nothing for a failure.
    pub fn tokens(&self) -> (Option<u64>, Option<u64>, bool) {
        if !self.ok() {
            return (None, None, false);
        }
        match (self.prompt_tokens, self.completion_tokens) {
            (None, None) => (
                Some(estimate_tokens(self.prompt_bytes)),
                Some(estimate_tokens(self.content_bytes)),
                true,
            ),
            (p, c) => (p, c, false),
        }
    }
}

impl Window {
    /// Counts a finished turn in the current second (warm-up included).
    pub fn record_turn(&mut self, t: &FinishedTurn<'_>) {
        self.requests += 1;
        if let Some(class) = t.error {
            self.error_classes[class as usize] += 1;
            return;
        }
        if let Some(latency) = t.latency {
            self.latency.record(latency);
        }
        if let Some(ttft) = t.ttft {
            self.ttft.record(ttft);
        }
    }

    /// Records a successful turn's gaps between content events.
    pub fn record_itl(&mut self, t: &FinishedTurn<'_>) {
        if t.ok() {
            for &gap in t.itl_gaps_us {
                self.itl.record_us(u64::from(gap));
            }
        }
    }
}

impl StageMetrics {
    /// Folds a finished turn in; returns whether it succeeded (a failed
    /// turn ends its conversation).
    pub fn record_turn(&mut self, t: &FinishedTurn<'_>) -> bool {
        if let Some(connect) = t.connect {
            self.connects += 1;
            self.connect.record(connect);
        }
        if let Some(tls) = t.tls {
            self.tls_handshakes += 1;
            self.tls_resumed += u64::from(t.tls_resumed);
            self.tls.record(tls);
        }
        if t.warmup {
            self.warmup_requests += 1;
            return t.ok();
        }
        self.requests += 1;
        self.turn_row(t.turn).requests += 1;
        if t.turn == 0 {
            self.conversations_started += 1;
        }
        self.stale_retries += u64::from(t.stale_retry);
        // A failed connect has no status of its own.
        if t.status != 0 && !t.error.is_some_and(ErrorClass::is_connect) {
            self.count_status(t.status);
        }
        if let Some(ttfb) = t.ttfb {
            self.ttfb.record(ttfb);
        }
        if let Some(class) = t.error {
            self.count_error(class);
            self.conversations_failed += 1;
            if class == ErrorClass::Http429 {
                self.retry_after_s_max = self.retry_after_s_max.max(t.retry_after_s);
            }
            return false;
        }
        self.ok += 1;
        if t.turn + 1 == t.turns {
            self.conversations_completed += 1;
        }
        self.record_success(t);
        true
    }

    /// The figures only a success has: timings, the turn row, events and
    /// tokens.
    fn record_success(&mut self, t: &FinishedTurn<'_>) {
        if let Some(latency) = t.latency {
            self.latency.record(latency);
        }
        if let Some(ttft) = t.ttft {
            self.ttft.record(ttft);
        }
        if let Some(ttfr) = t.ttfr {
            self.ttfr.record(ttfr);
        }
        if let Some(late) = t.late {
            if let Some(latency) = t.latency {
                self.latency_corrected.record(latency + late);
            }
            if let Some(ttft) = t.ttft {
                self.ttft_corrected.record(ttft + late);
            }
        }
        let row = self.turn_row(t.turn);
        row.ok += 1;
        row.latency_us += t.latency.map_or(0, |d| d.as_micros() as u64);
        if let Some(ttft) = t.ttft {
            row.ttft_samples += 1;
            row.ttft_us += ttft.as_micros() as u64;
        }
        if let Some(p) = t.prompt_tokens {
            row.prompt_samples += 1;
            row.prompt_tokens += p;
        }
        for &gap in t.itl_gaps_us {
            self.itl.record_us(u64::from(gap));
        }
        self.itl_gaps_dropped += t.itl_gaps_dropped;
        self.sse_events += t.sse_events;
        self.content_events += t.content_events;
        self.reasoning_events += t.reasoning_events;
        self.sequence_gaps += t.sequence_gaps;
        self.content_bytes += t.content_bytes;
        self.cached_tokens += t.cached_tokens.unwrap_or(0);
        self.reasoning_tokens += t.reasoning_tokens.unwrap_or(0);
        match (t.prompt_tokens, t.completion_tokens) {
            (None, None) => {
                self.usage_missing += 1;
                self.prompt_tokens_estimated += estimate_tokens(t.prompt_bytes);
                self.completion_tokens_estimated += estimate_tokens(t.content_bytes);
            }
            (p, c) => {
                self.prompt_tokens += p.unwrap_or(0);
                self.completion_tokens += c.unwrap_or(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    fn us(n: u64) -> Option<Duration> {
        Some(Duration::from_micros(n))
    }

    #[test]
    fn a_success_counts_everywhere_it_belongs() {
        let gaps = [1_000, 2_000, 3_000];
        let turn = FinishedTurn {
            turn: 1,
            turns: 2,
            status: 200,
            // Under 2.048 ms, so the histograms hold them exactly.
            connect: us(200),
            ttfb: us(400),
            ttft: us(500),
            latency: us(1_900),
            late: us(100),
            itl_gaps_us: &gaps,
            sse_events: 5,
            content_events: 3,
            content_bytes: 30,
            prompt_tokens: Some(100),
            completion_tokens: Some(3),
            cached_tokens: Some(64),
            ttfr: us(300),
            reasoning_events: 2,
            reasoning_tokens: Some(40),
            sequence_gaps: 1,
            ..FinishedTurn::default()
        };
        let mut m = StageMetrics::new();
        assert!(m.record_turn(&turn));
        assert_eq!((m.requests, m.ok, m.connects), (1, 1, 1));
        assert_eq!(m.conversations_completed, 1, "the last turn completes it");
        assert_eq!(m.conversations_started, 0, "only a first turn starts one");
        assert_eq!(m.status_counts(), vec![(200, 1)]);
        assert_eq!(m.latency.percentile_ms(50.0), Some(1.9));
        assert_eq!(m.latency_corrected.percentile_ms(50.0), Some(2.0));
        assert_eq!(m.ttft_corrected.percentile_ms(50.0), Some(0.6));
        assert_eq!(m.itl.count(), 3);
        assert_eq!(m.ttfr.percentile_ms(50.0), Some(0.3));
        assert_eq!(
            (m.reasoning_events, m.reasoning_tokens, m.sequence_gaps),
            (2, 40, 1)
        );
        assert_eq!(
            (m.prompt_tokens, m.completion_tokens, m.cached_tokens),
            (100, 3, 64)
        );
        let row = m.turns[1];
        assert_eq!(
            (row.requests, row.ok, row.prompt_tokens, row.ttft_us),
            (1, 1, 100, 500)
        );
        assert_eq!(turn.tokens(), (Some(100), Some(3), false));
        let mut window = Window::default();
        window.record_turn(&turn);
        assert_eq!(
            (window.requests, window.errors(), window.latency.count()),
            (1, 0, 1)
        );
        assert_eq!(window.itl.count(), 0, "ITL only when asked for");
        window.record_itl(&turn);
        assert_eq!(window.itl.count(), 3);
        let failed = FinishedTurn {
            error: Some(ErrorClass::Timeout),
            ..turn
        };
        window.record_turn(&failed);
        window.record_itl(&failed);
        assert_eq!(window.itl.count(), 3, "a failure's gaps are not counted");
        assert_eq!(window.error_classes[ErrorClass::Timeout as usize], 1);
    }

    #[test]
    fn failures_warmup_and_missing_usage() {
        let mut m = StageMetrics::new();
        // A refused connect: an error, no status counted.
        let refused = FinishedTurn {
            turns: 1,
            error: Some(ErrorClass::ConnRefused),
            status: 0,
            ..FinishedTurn::default()
        };
        assert!(!m.record_turn(&refused));
        // A 429 keeps its Retry-After.
        let limited = FinishedTurn {
            turns: 1,
            error: Some(ErrorClass::Http429),
            status: 429,
            retry_after_s: Some(7),
            latency: ms(1),
            ..FinishedTurn::default()
        };
        assert!(!m.record_turn(&limited));
        assert_eq!(m.requests, 2);
        assert_eq!(m.ok, 0);
        assert_eq!(m.conversations_started, 2);
        assert_eq!(m.conversations_failed, 2);
        assert_eq!(m.status_counts(), vec![(429, 1)]);
        assert_eq!(m.retry_after_s_max, Some(7));
        assert_eq!(m.latency.count(), 0, "failures have no latency sample");
        assert_eq!(limited.tokens(), (None, None, false));
        // Warm-up: counted apart, nothing else.
        let early = FinishedTurn {
            turns: 1,
            warmup: true,
            status: 200,
            latency: ms(1),
            ..FinishedTurn::default()
        };
        assert!(m.record_turn(&early));
        assert_eq!((m.requests, m.warmup_requests), (2, 1));
        // No usage: estimated from the text, never mixed into the counts.
        let silent = FinishedTurn {
            turns: 1,
            status: 200,
            prompt_bytes: 40,
            content_bytes: 9,
            ..FinishedTurn::default()
        };
        assert!(m.record_turn(&silent));
        assert_eq!(m.usage_missing, 1);
        assert_eq!((m.prompt_tokens, m.prompt_tokens_estimated), (0, 10));
        assert_eq!(m.completion_tokens_estimated, 3);
        assert_eq!(silent.tokens(), (Some(10), Some(3), true));
        assert_eq!(m.requests, m.ok + m.errors_total());
    }
}
