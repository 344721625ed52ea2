//! `StageMetrics` as a summary holds it: error classes and status codes as
//! name → count maps, histograms as `Hist` writes them, per-turn rows with
//! their sums (so they merge exactly) and their means. The conversions are
//! field lists, one line per field.

use super::metrics::{ErrorClass, Hist, StageMetrics, TurnRow, STATUS_SLOTS};
use crate::limits;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Conversation outcomes, as a summary groups them.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ConversationsWire {
    started: u64,
    completed: u64,
    failed: u64,
    cut_by_stage_end: u64,
    context_limit: u64,
}

/// One per-turn row as a summary holds it: the sums that merge, then the
/// means derived from them (written, never read back).
#[derive(Debug, Serialize, Deserialize)]
struct TurnWire {
    turn: usize,
    #[serde(default, skip_deserializing)]
    and_later: bool,
    requests: u64,
    ok: u64,
    prompt_samples: u64,
    prompt_tokens: u64,
    latency_us: u64,
    ttft_samples: u64,
    ttft_us: u64,
    #[serde(default, skip_deserializing)]
    prompt_tokens_mean: Option<f64>,
    #[serde(default, skip_deserializing)]
    latency_ms_mean: Option<f64>,
    #[serde(default, skip_deserializing)]
    ttft_ms_mean: Option<f64>,
}

/// `StageMetrics` as a summary holds it (see `StageMetrics`).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct MetricsWire {
    requests: u64,
    ok: u64,
    warmup_requests: u64,
    errors: BTreeMap<String, u64>,
    status_codes: BTreeMap<String, u64>,
    retry_after_s_max: Option<u32>,
    latency_ms: Hist,
    ttft_ms: Hist,
    ttfr_ms: Hist,
    ttfb_ms: Hist,
    itl_ms: Hist,
    connect_ms: Hist,
    #[serde(default = "Hist::new")]
    tls_ms: Hist,
    latency_corrected_ms: Hist,
    ttft_corrected_ms: Hist,
    sched_lag_ms: Hist,
    arrivals: u64,
    dropped_arrivals: u64,
    #[serde(default)]
    missed_arrivals: u64,
    #[serde(default)]
    arrivals_sent: u64,
    inflight_peak: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cached_prompt_tokens: u64,
    usage_missing: u64,
    prompt_tokens_estimated: u64,
    completion_tokens_estimated: u64,
    conversations: ConversationsWire,
    turns: Vec<TurnWire>,
    sse_events: u64,
    content_events: u64,
    reasoning_events: u64,
    reasoning_tokens: u64,
    sequence_gaps: u64,
    content_bytes: u64,
    itl_gaps_dropped: u64,
    connects: u64,
    #[serde(default)]
    tls_handshakes: u64,
    #[serde(default)]
    tls_resumed: u64,
    stale_retries: u64,
    connections_open: u64,
}

/// The key of a status slot in `status_codes`: the code, or `other`.
const STATUS_OTHER: &str = "other";

// The two conversions below are field lists, one line per field, and
// longer than 70 lines for that reason only.
impl From<StageMetrics> for MetricsWire {
    fn from(m: StageMetrics) -> MetricsWire {
        let errors = m
            .error_counts()
            .into_iter()
            .map(|(class, n)| (class.name().to_string(), n))
            .collect();
        let status_codes = m
            .status_counts()
            .into_iter()
            .map(|(code, n)| {
                let key = if code == 0 {
                    STATUS_OTHER.to_string()
                } else {
                    code.to_string()
                };
                (key, n)
            })
            .collect();
        let turns = m
            .turn_rows()
            .into_iter()
            .map(|(turn, row)| TurnWire {
                turn,
                and_later: turn == limits::TURN_ROWS,
                requests: row.requests,
                ok: row.ok,
                prompt_samples: row.prompt_samples,
                prompt_tokens: row.prompt_tokens,
                latency_us: row.latency_us,
                ttft_samples: row.ttft_samples,
                ttft_us: row.ttft_us,
                prompt_tokens_mean: row.mean_prompt_tokens(),
                latency_ms_mean: row.mean_latency_ms(),
                ttft_ms_mean: row.mean_ttft_ms(),
            })
            .collect();
        MetricsWire {
            requests: m.requests,
            ok: m.ok,
            warmup_requests: m.warmup_requests,
            errors,
            status_codes,
            retry_after_s_max: m.retry_after_s_max,
            latency_ms: m.latency,
            ttft_ms: m.ttft,
            ttfr_ms: m.ttfr,
            ttfb_ms: m.ttfb,
            itl_ms: m.itl,
            connect_ms: m.connect,
            tls_ms: m.tls,
            latency_corrected_ms: m.latency_corrected,
            ttft_corrected_ms: m.ttft_corrected,
            sched_lag_ms: m.sched_lag,
            arrivals: m.arrivals,
            dropped_arrivals: m.dropped_arrivals,
            missed_arrivals: m.missed_arrivals,
            arrivals_sent: m.arrivals_sent,
            inflight_peak: m.inflight_peak,
            prompt_tokens: m.prompt_tokens,
            completion_tokens: m.completion_tokens,
            cached_prompt_tokens: m.cached_tokens,
            usage_missing: m.usage_missing,
            prompt_tokens_estimated: m.prompt_tokens_estimated,
            completion_tokens_estimated: m.completion_tokens_estimated,
            conversations: ConversationsWire {
                started: m.conversations_started,
                completed: m.conversations_completed,
                failed: m.conversations_failed,
                cut_by_stage_end: m.conversations_cut,
                context_limit: m.context_limit,
            },
            turns,
            sse_events: m.sse_events,
            content_events: m.content_events,
            reasoning_events: m.reasoning_events,
            reasoning_tokens: m.reasoning_tokens,
            sequence_gaps: m.sequence_gaps,
            content_bytes: m.content_bytes,
            itl_gaps_dropped: m.itl_gaps_dropped,
            connects: m.connects,
            tls_handshakes: m.tls_handshakes,
            tls_resumed: m.tls_resumed,
            stale_retries: m.stale_retries,
            connections_open: m.connections_open,
        }
    }
}

impl TryFrom<MetricsWire> for StageMetrics {
    type Error = String;

    /// Over 70 lines on purpose: one assignment per field, in the order of
    /// the wire struct, so a field added there is easy to see missing here.
    fn try_from(w: MetricsWire) -> Result<StageMetrics, String> {
        let mut m = StageMetrics::new();
        for (name, n) in w.errors {
            let class = ErrorClass::from_name(&name)
                .ok_or_else(|| format!("errors: unknown error class `{name}`"))?;
            m.errors[class as usize] = n;
        }
        for (key, n) in w.status_codes {
            let slot = if key == STATUS_OTHER {
                STATUS_SLOTS - 1
            } else {
                match key.parse::<u16>() {
                    Ok(code @ 100..=599) => usize::from(code - 100),
                    _ => return Err(format!("status_codes: `{key}` is not a status code")),
                }
            };
            m.status[slot] = n;
        }
        for t in w.turns {
            if t.turn == 0 || t.turn > limits::TURN_ROWS {
                return Err(format!(
                    "turns: turn {} is outside 1..={}",
                    t.turn,
                    limits::TURN_ROWS
                ));
            }
            m.turns[t.turn - 1] = TurnRow {
                requests: t.requests,
                ok: t.ok,
                prompt_samples: t.prompt_samples,
                prompt_tokens: t.prompt_tokens,
                latency_us: t.latency_us,
                ttft_samples: t.ttft_samples,
                ttft_us: t.ttft_us,
            };
        }
        m.requests = w.requests;
        m.ok = w.ok;
        m.warmup_requests = w.warmup_requests;
        m.retry_after_s_max = w.retry_after_s_max;
        m.latency = w.latency_ms;
        m.ttft = w.ttft_ms;
        m.ttfr = w.ttfr_ms;
        m.ttfb = w.ttfb_ms;
        m.itl = w.itl_ms;
        m.connect = w.connect_ms;
        m.tls = w.tls_ms;
        m.latency_corrected = w.latency_corrected_ms;
        m.ttft_corrected = w.ttft_corrected_ms;
        m.sched_lag = w.sched_lag_ms;
        m.arrivals = w.arrivals;
        m.dropped_arrivals = w.dropped_arrivals;
        m.missed_arrivals = w.missed_arrivals;
        m.arrivals_sent = w.arrivals_sent;
        m.inflight_peak = w.inflight_peak;
        m.prompt_tokens = w.prompt_tokens;
        m.completion_tokens = w.completion_tokens;
        m.cached_tokens = w.cached_prompt_tokens;
        m.usage_missing = w.usage_missing;
        m.prompt_tokens_estimated = w.prompt_tokens_estimated;
        m.completion_tokens_estimated = w.completion_tokens_estimated;
        m.conversations_started = w.conversations.started;
        m.conversations_completed = w.conversations.completed;
        m.conversations_failed = w.conversations.failed;
        m.conversations_cut = w.conversations.cut_by_stage_end;
        m.context_limit = w.conversations.context_limit;
        m.sse_events = w.sse_events;
        m.content_events = w.content_events;
        m.reasoning_events = w.reasoning_events;
        m.reasoning_tokens = w.reasoning_tokens;
        m.sequence_gaps = w.sequence_gaps;
        m.content_bytes = w.content_bytes;
        m.itl_gaps_dropped = w.itl_gaps_dropped;
        m.connects = w.connects;
        m.tls_handshakes = w.tls_handshakes;
        m.tls_resumed = w.tls_resumed;
        m.stale_retries = w.stale_retries;
        m.connections_open = w.connections_open;
        Ok(m)
    }
}
