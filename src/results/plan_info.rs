//! What a summary says about the plan it ran: every figure a report or a
//! reader needs to know what was measured and how, with secrets masked.
//! `loadtest validate` prints the same type, so what it shows is what a
//! run records.

use crate::plan::{CacheMode, Content, Plan, Thresholds};
use crate::secrets;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An inclusive range.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Range<T> {
    /// Lowest.
    pub min: T,
    /// Highest.
    pub max: T,
}

/// Where a scenario's prompts come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum ContentInfo {
    /// Picked at random from a pool of this many prompts.
    Pool {
        /// Prompts in the pool.
        prompts: usize,
    },
    /// Turn i says line i of a script of this many lines.
    Scripted {
        /// Lines in the script.
        script: usize,
    },
    /// Generated text of about this many tokens per turn.
    Sized {
        /// Approximate input tokens per turn.
        approx_input_tokens: u64,
    },
}

impl ContentInfo {
    /// A short label for the run header, e.g. `pool(4)`.
    pub fn label(&self) -> String {
        match self {
            ContentInfo::Pool { prompts } => format!("pool({prompts})"),
            ContentInfo::Scripted { script } => format!("scripted({script})"),
            ContentInfo::Sized {
                approx_input_tokens,
            } => format!("sized(~{approx_input_tokens} tokens)"),
        }
    }
}

/// One scenario of the blend, as resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioInfo {
    /// Name in reports.
    pub name: String,
    /// The service it runs against (comparisons only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Relative weight.
    pub weight: f64,
    /// Its share of users or arrivals, percent.
    pub share_pct: f64,
    /// Wire format (`openai-chat`, `anthropic`).
    pub protocol: String,
    /// Target URL, query values masked.
    pub target: String,
    /// Request path.
    pub path: String,
    /// Resolved socket address.
    pub address: String,
    /// Model name.
    pub model: String,
    /// Length of the system prompt in characters, if there is one.
    pub system_chars: Option<usize>,
    /// Output token cap.
    pub max_tokens: u32,
    /// Streamed (SSE).
    pub stream: bool,
    /// Where the key goes (`bearer`, `x-api-key`).
    pub auth: String,
    /// Request headers, secret values masked.
    pub headers: BTreeMap<String, String>,
    /// Whole-request timeout, seconds.
    pub timeout_s: f64,
    /// Turns per conversation.
    pub turns: Range<u64>,
    /// Pause between turns, seconds.
    pub think_time_s: Range<f64>,
    /// Where prompts come from.
    pub content: ContentInfo,
    /// Where a conversation's history lives: `resend` (every turn sends
    /// it) or `previous_response_id` (the server keeps it).
    pub history: String,
}

/// How prompts are correlated with the gateway's own rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Correlation {
    /// The conversation UUID is in the prompt.
    pub uuid_in_prompt: bool,
    /// The header that carries it, if any.
    pub header: Option<String>,
}

/// The plan as run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanInfo {
    /// The blend.
    pub scenarios: Vec<ScenarioInfo>,
    /// Stage labels, in order (as one host ran them).
    pub stages: Vec<String>,
    /// Open loop: most conversations in flight (summed over hosts when
    /// merged).
    pub max_inflight: u64,
    /// Open loop: the pacer's shortest sleep between wake-ups, µs (the
    /// largest of the hosts' when merged; summaries from before the
    /// setting existed ran with 100).
    #[serde(default = "default_pacer_tick_us")]
    pub pacer_tick_us: u64,
    /// Warm-up at the start of each stage, seconds.
    pub warmup_s: f64,
    /// Connect timeout, seconds.
    pub connect_timeout_s: f64,
    /// `bust`, `shared-prefix` or `natural`.
    pub cache_mode: String,
    /// Tokens of the shared preamble, with `shared-prefix`.
    pub shared_prefix_tokens: Option<u64>,
    /// Correlation with server-side rows.
    pub correlation: Correlation,
    /// Pass/fail limits.
    pub thresholds: Thresholds,
    /// Connections are reused.
    pub keep_alive: bool,
    /// TLS verification is off.
    pub insecure: bool,
    /// Error bodies are kept for the per-turn log.
    pub capture_error_body: bool,
    /// A request on a reused connection found closed is retried once.
    pub retry_stale: bool,
    /// Seed for blends and content.
    pub seed: u64,
    /// Generator shards (summed over hosts when merged).
    pub shards: usize,
    /// Their CPUs (each host's, one after the other, when merged).
    pub cpus: Vec<usize>,
    /// What carried the shards' socket I/O and timers: `io_uring` or
    /// `epoll` (`rt::io`; summaries from before the choice existed ran on
    /// epoll).
    #[serde(default = "epoll")]
    pub reactor: String,
    /// Distinct target addresses.
    pub target_addresses: usize,
    /// Each distinct target: its address and how long resolving it took
    /// (once, at start).
    #[serde(default)]
    pub targets: Vec<TargetInfo>,
    /// How https targets are trusted (`None`: no https target).
    #[serde(default)]
    pub tls: Option<TlsInfo>,
    /// Services compared in one window (empty: no comparison).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceInfo>,
    /// The service deltas are taken against (`None`: the fastest in each
    /// stage and round).
    #[serde(default)]
    pub baseline: Option<String>,
    /// Times the stage list ran (`stages` lists every round's).
    #[serde(default = "one")]
    pub rounds: u32,
}

fn one() -> u32 {
    1
}

fn default_pacer_tick_us() -> u64 {
    100
}

fn epoll() -> String {
    "epoll".to_string()
}

/// One service of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// Name in reports.
    pub name: String,
    /// Its URL, secrets masked.
    pub url: String,
    /// The model it is sent, when it names its own.
    pub model: Option<String>,
    /// The environment variable its key came from (never the key).
    pub key_env: Option<String>,
}

/// One target as resolved at start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetInfo {
    /// The URL (secrets masked).
    pub url: String,
    /// The address connected to.
    pub address: String,
    /// Over TLS.
    pub tls: bool,
    /// Resolving the host, milliseconds (`None`: an IP literal or
    /// `--resolve`).
    pub dns_ms: Option<f64>,
}

/// How https targets are trusted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TlsInfo {
    /// Certificates are verified (`false`: `--insecure`).
    pub verify: bool,
    /// Root certificates trusted (system store, `--cacert`, the
    /// in-process mock's CA).
    pub roots: usize,
    /// `--cacert` files.
    pub cacert: Vec<String>,
    /// Sessions are resumed on reconnect (`--no-tls-resume` unset).
    pub resume: bool,
}

impl ScenarioInfo {
    /// The name a table shows: `chat`, or `chat@gw` with a service.
    pub fn label(&self) -> String {
        match &self.service {
            Some(service) => format!("{}@{service}", self.name),
            None => self.name.clone(),
        }
    }
}

impl PlanInfo {
    /// Width of a scenario column: the longest label, at least 14.
    pub fn label_width(&self) -> usize {
        self.scenarios
            .iter()
            .map(|s| s.label().chars().count())
            .max()
            .unwrap_or(0)
            .max(14)
    }

    /// Describes `plan`. A field list, one line per field (hence its
    /// length).
    pub fn of(plan: &Plan) -> PlanInfo {
        let total: f64 = plan.scenarios.iter().map(|s| s.weight).sum();
        let scenarios = plan
            .scenarios
            .iter()
            .map(|s| {
                let target = &plan.targets[s.target];
                ScenarioInfo {
                    name: s.name.clone(),
                    service: plan.services.get(s.service).map(|v| v.name.clone()),
                    weight: s.weight,
                    share_pct: 100.0 * s.weight / total,
                    protocol: s.protocol.name().to_string(),
                    target: secrets::url(&target.url),
                    path: secrets::url(&target.path),
                    address: target.addr.to_string(),
                    model: s.model.clone(),
                    system_chars: s.system.as_ref().map(|t| t.chars().count()),
                    max_tokens: s.max_tokens,
                    stream: s.stream,
                    auth: s.auth.name().to_string(),
                    headers: s
                        .headers
                        .iter()
                        .map(|(name, value)| {
                            let shown = secrets::header_value(name, value, &plan.public_headers);
                            (name.clone(), shown)
                        })
                        .collect(),
                    timeout_s: s.timeout.as_secs_f64(),
                    turns: Range {
                        min: s.turns.0,
                        max: s.turns.1,
                    },
                    think_time_s: Range {
                        min: s.think_time.0.as_secs_f64(),
                        max: s.think_time.1.as_secs_f64(),
                    },
                    content: match &s.content {
                        Content::Pool(list) => ContentInfo::Pool {
                            prompts: list.len(),
                        },
                        Content::Scripted(list) => ContentInfo::Scripted { script: list.len() },
                        Content::Sized(tokens) => ContentInfo::Sized {
                            approx_input_tokens: *tokens,
                        },
                    },
                    history: if s.server_history {
                        "previous_response_id"
                    } else {
                        "resend"
                    }
                    .to_string(),
                }
            })
            .collect();
        let mut addresses: Vec<_> = plan.targets.iter().map(|t| t.addr).collect();
        addresses.sort();
        addresses.dedup();
        PlanInfo {
            scenarios,
            stages: plan.stages.iter().map(|s| s.label()).collect(),
            max_inflight: plan.max_inflight,
            pacer_tick_us: plan.pacer_tick.as_micros() as u64,
            warmup_s: plan.warmup.as_secs_f64(),
            connect_timeout_s: plan.connect_timeout.as_secs_f64(),
            cache_mode: plan.cache_mode.name().to_string(),
            shared_prefix_tokens: plan
                .shared_prefix
                .as_ref()
                .map(|_| plan.shared_prefix_tokens),
            correlation: Correlation {
                uuid_in_prompt: plan.uuid_in_prompt && plan.cache_mode != CacheMode::Natural,
                header: plan.correlation_header.clone(),
            },
            thresholds: plan.thresholds,
            keep_alive: plan.keep_alive,
            insecure: plan.insecure,
            capture_error_body: plan.capture_error_body,
            retry_stale: plan.retry_stale,
            seed: plan.seed,
            shards: plan.cpus.len(),
            cpus: plan.cpus.clone(),
            reactor: crate::rt::chosen_io().name().to_string(),
            target_addresses: addresses.len(),
            targets: plan
                .targets
                .iter()
                .map(|t| TargetInfo {
                    url: secrets::url(&t.url),
                    address: t.addr.to_string(),
                    tls: t.tls,
                    dns_ms: t.dns.map(|d| d.as_secs_f64() * 1000.0),
                })
                .collect(),
            tls: plan.trust.as_ref().map(|trust| TlsInfo {
                verify: !plan.insecure,
                roots: trust.roots,
                cacert: plan
                    .cacert
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect(),
                resume: plan.tls_resume,
            }),
            services: plan
                .services
                .iter()
                .map(|s| ServiceInfo {
                    name: s.name.clone(),
                    url: s.url.clone(),
                    model: s.model.clone(),
                    key_env: s.key_env.clone(),
                })
                .collect(),
            baseline: plan.baseline.map(|i| plan.services[i].name.clone()),
            rounds: plan.rounds,
        }
    }

    /// `closed`, `open` or `mixed`, from the stage labels.
    pub fn loop_mode(&self) -> &'static str {
        let open = self.stages.iter().filter(|s| s.starts_with('@')).count();
        match open {
            0 => "closed",
            n if n == self.stages.len() => "open",
            _ => "mixed",
        }
    }
}
